from pathlib import Path

import pytest

from seir.engine.spec import JobSpecError, load_job

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


MINIMAL = """\
name: t
seeds:
  files: [seeds.jsonl]
roles:
  llm: {backend: transformers-chat, model: tiny:llm}
  judge: {backend: transformers-vision-chat, model: tiny:judge}
  image: {backend: diffusers-text-to-image, model: tiny:sd}
"""


def test_every_job_in_jobs_folder_loads():
    jobs = sorted((REPO / "jobs").glob("*.yaml"))
    assert jobs, "jobs/ holds job specs"
    for job in jobs:
        spec = load_job(job)
        assert {"llm", "judge", "image"} <= set(spec.roles)


def test_relative_paths_resolve_against_the_spec_folder(tmp_path):
    spec = load_job(write(tmp_path, MINIMAL))
    assert spec.seeds.files == [(tmp_path / "seeds.jsonl").resolve()]


def test_unknown_key_names_file_line_and_key(tmp_path):
    path = write(tmp_path, MINIMAL + "  embed: {backend: sentence-transformers, model: m, replcas: 2}\n")
    with pytest.raises(JobSpecError) as err:
        load_job(path)
    assert f"{path}:8: roles.embed.replcas: unknown key" in str(err.value)


def test_wrong_type_names_the_key(tmp_path):
    path = write(tmp_path, MINIMAL + "seir:\n  turns: many\n")
    with pytest.raises(JobSpecError) as err:
        load_job(path)
    assert f"{path}:9: seir.turns:" in str(err.value)
    assert "integer" in str(err.value)


def test_turns_go_to_32_and_a_role_may_set_its_window(tmp_path):
    spec = load_job(write(tmp_path, MINIMAL.replace("model: tiny:llm}", "model: tiny:llm, context_length: 2048}")
                          + "seir:\n  turns: 32\n"))
    assert spec.seir.turns == 32 and spec.roles["llm"].context_length == 2048
    assert spec.roles["judge"].context_length is None
    with pytest.raises(JobSpecError, match=r"seir\.turns: Input should be less than or equal to 32"):
        load_job(write(tmp_path, MINIMAL + "seir:\n  turns: 33\n"))


def test_missing_role_and_bad_yaml_are_reported(tmp_path):
    with pytest.raises(JobSpecError, match="missing model roles: image"):
        load_job(write(tmp_path, MINIMAL.replace("  image: {backend: diffusers-text-to-image, model: tiny:sd}\n", "")))
    with pytest.raises(JobSpecError, match=r"job\.yaml:3: not valid YAML"):
        load_job(write(tmp_path, "name: t\nseeds: [\n"))
    with pytest.raises(JobSpecError, match="not found"):
        load_job(tmp_path / "absent.yaml")


def test_generation_key_ignores_thresholds_and_pool_sizes(tmp_path):
    base = load_job(write(tmp_path, MINIMAL))
    bigger_pool = base.roles["llm"].model_copy(update={"replicas": 4, "batch_size": 64})
    resized = base.model_copy(update={"roles": {**base.roles, "llm": bigger_pool}})
    assert resized.generation_key("p") == base.generation_key("p")
    regated = base.model_copy(update={"seir": base.seir.model_copy(update={"gate_default": 1.0})})
    assert regated.generation_key("p") != base.generation_key("p")
    assert base.generation_key("p") != base.generation_key("q")
