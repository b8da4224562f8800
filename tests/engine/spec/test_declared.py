"""Jobs checked against what their operators declare, at load and by `seir validate`, before Ray or any model; and
plugin operators (`module:Class`) built and run from their declarations like the built-in ones."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from seir.engine.cli import main
from seir.engine.dedup import DedupItem, find_duplicates
from seir.engine.records import Ledger
from seir.engine.run.scoring import StageScorer, scorer_roles
from seir.engine.spec import DEDUP_METHODS as METHODS
from seir.engine.spec import DedupConfig, JobSpecError, load_job
from seir.operators.scoring.rubrics import TurnView
from seir.operators.stages import AnswerStage
from tests.engine.conftest import job_dict, write_job

REPO = Path(__file__).resolve().parents[3]
SCORER = "tests.engine.plugin_operators:AnswerEmbedding"
METHOD = "tests.engine.plugin_operators:FirstWords"


def without_embed(**overrides: Any) -> dict[str, Any]:
    """A job with no embed role, whose scorers need none."""
    job = job_dict(**overrides)
    del job["roles"]["embed"]
    job["scoring"]["weights"]["text_content"] = {"judge": 1.0}
    return job


def line_of(path: Path, text: str, after: str | None = None) -> int:
    """The first line holding ``text`` (after the first line holding ``after``)."""
    lines = path.read_text().splitlines()
    start = 0 if after is None else next(n for n, line in enumerate(lines) if after in line)
    return next(n for n, line in enumerate(lines, start=1) if n > start and text in line)


def refusal(path: Path) -> str:
    with pytest.raises(JobSpecError) as err:
        load_job(path)
    return str(err.value)


def test_seir_validate_passes_every_job_in_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    jobs = sorted((REPO / "jobs").glob("*.yaml"))
    assert jobs
    for job in jobs:
        assert main(["validate", str(job)]) == 0
        first, *windows = capsys.readouterr().out.strip().splitlines()
        assert first.startswith(f"{job}: OK (") and first.endswith("dedup methods)")
        # One line per chat role, naming its context window; no job in jobs/ has requests that cannot fit.
        roles = [line.split(":")[0].strip() for line in windows if not line.startswith("  WARNING")]
        assert roles == [r for r in load_job(job).roles if r in ("llm", "vlm", "judge")], windows
        assert all("context window" in line for line in windows) and "WARNING" not in "".join(windows)


def test_semantic_dedup_without_embed_is_refused_at_load_naming_embed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_job(tmp_path, without_embed(dedup={"methods": ["exact-text", "semantic"]}))
    expected = (f"{path}:{line_of(path, '- semantic')}: dedup.methods.1: dedup method 'semantic' needs the embed "
                "role: add an `embed` role under roles, or remove 'semantic' from dedup.methods")
    assert refusal(path) == expected
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err == f"seir: error: {expected}\n"


def test_default_dedup_methods_are_those_the_roles_allow(tmp_path: Path) -> None:
    assert load_job(write_job(tmp_path / "a", without_embed())).dedup.methods == tuple(
        m for m in METHODS if m != "semantic")
    assert load_job(write_job(tmp_path / "b", job_dict())).dedup.methods == METHODS
    minhash_only = load_job(write_job(tmp_path / "c", without_embed(dedup={"minhash": {"threshold": 0.7}})))
    assert "semantic" not in minhash_only.dedup.methods and minhash_only.dedup.minhash.threshold == 0.7


def test_a_weight_naming_an_unknown_scorer_is_refused(tmp_path: Path) -> None:
    job = job_dict()
    job["scoring"]["weights"]["text_content"] = {"judge": 0.5, "txet": 0.5}
    path = write_job(tmp_path, job)
    assert refusal(path) == (
        f"{path}:{line_of(path, 'txet:')}: scoring.weights.text_content.txet: unknown scorer 'txet'; known scorers: "
        "clip, image-quality, judge, source-similarity, text, or give 'module:Class'; fix the name, or remove it "
        "from scoring.weights.text_content")


def test_what_each_scorer_declares_is_checked(tmp_path: Path) -> None:
    job = without_embed()
    job["scoring"]["weights"]["text_content"] = {"judge": 0.5, "text": 0.5}  # text embeds
    job["scoring"]["weights"]["image_quality"] = {"judge": 0.5, "clip": 0.5}  # clip gives no image quality
    job["roles"]["judge"]["backend"] = "transformers-chat"  # the judge looks at images
    path = write_job(tmp_path, job)
    problems = refusal(path).splitlines()
    assert problems == [
        f"{path}:{line_of(path, 'backend:', after='  judge:')}: roles.judge.backend: scorer 'judge' uses vision on the "
        "judge role, which backend 'transformers-chat' does not offer (it offers chat, score): give the role a "
        "backend that does, or remove 'judge' from scoring.weights",
        f"{path}:{line_of(path, '    text: 0.5')}: scoring.weights.text_content.text: scorer 'text' needs the "
        "embed role: add an `embed` role under roles, or remove 'text' from scoring.weights",
        f"{path}:{line_of(path, 'clip: 0.5', after='  image_quality:')}: scoring.weights.image_quality.clip: "
        "scorer 'clip' gives no image_quality score (it scores image_content, image_text_synergy): remove it from "
        "scoring.weights.image_quality",
    ]


class FakeEmbed:
    """A model client for the embed role: every text embeds as [0.6, 0.0]."""

    model_id = "fake-embed"
    window = None  # takes no chat requests

    async def embed(self, texts: list[str], ledger: Ledger) -> list[list[float]]:
        return [[0.6, 0.0] for _ in texts]


def test_a_plugin_scorer_is_checked_and_built_from_its_declaration(tmp_path: Path) -> None:
    scoring = {"weights": {"text_content": {SCORER: 1.0}}, "thresholds": {"text_content": 2.0}}
    refused = refusal(write_job(tmp_path / "a", {**without_embed(), "scoring": scoring}))
    assert f"scoring.weights.text_content.{SCORER}: scorer {SCORER!r} needs the embed role" in refused

    spec = load_job(write_job(tmp_path / "b", job_dict(scoring=scoring)))
    assert scorer_roles(spec) == ["embed"]
    scorer = StageScorer(spec, {"embed": FakeEmbed()})  # type: ignore[dict-item]
    view = TurnView("What is a snow leopard?", "A big cat of the mountains.")
    [verdict] = asyncio.run(scorer.verdicts(AnswerStage(caption_words=65), [view], Ledger()))
    assert verdict.combined == {"text_content": pytest.approx(3.0)} and verdict.passed
    [own] = [s for s in verdict.scores if s.scorer == SCORER]
    assert own.model_id == "fake-embed" and own.raw["raw"] == {"question_words": spec.seir.question_words}


def test_a_plugin_dedup_method_runs_like_a_built_in_one(tmp_path: Path) -> None:
    items = [DedupItem("a", "The snow leopard hunts at dusk.", score=4.0),
             DedupItem("b", "The Snow  leopard sleeps all day.", score=3.0),
             DedupItem("c", "the snow leopard hunts at dusk.", score=2.0),
             DedupItem("d", "Coral reefs glow.", score=1.0),
             DedupItem("e", "Coral", score=1.0)]
    result = find_duplicates(items, DedupConfig(methods=("exact-text", METHOD)))
    assert {(d.dropped_id, d.kept_id, d.method) for d in result.decisions} == {
        ("b", "a", METHOD), ("c", "a", "exact-text")}  # exact-text comes first, plugins after the built-ins
    assert [(s.dialogue_id, s.method, s.reason) for s in result.skipped] == [("e", METHOD, "fewer than 3 words")]

    job = job_dict(dedup={"methods": ["exact-text", METHOD]})
    assert load_job(write_job(tmp_path / "a", job)).dedup.methods == ("exact-text", METHOD)
    job["dedup"]["methods"].append(SCORER)
    assert "is not a dedup operator" in refusal(write_job(tmp_path / "b", job))


def test_validate_loads_no_model_and_starts_no_ray() -> None:
    """It reads the models' configs and tokenizers (to show context windows), never their weights."""
    code = ("import sys; opened = []\n"
            "sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == 'open' else None)\n"
            "from seir.engine.cli import main; code = main(['validate', sys.argv[1]])\n"
            "assert not {'ray', 'diffusers'} & set(sys.modules), sorted(sys.modules)\n"
            "weights = [p for p in opened if p.endswith(('.safetensors', '.bin', '.pt'))]\n"
            "assert not weights, weights; sys.exit(code)")
    job = REPO / "jobs" / "demo.yaml"
    done = subprocess.run([sys.executable, "-c", code, str(job)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{job}: OK (")


def test_image_seeds_with_a_writer_that_cannot_see_images_are_refused_at_load(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    import skimage.data
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).resize((48, 32)).save(buffer, format="PNG")
    (tmp_path / "coffee.png").write_bytes(buffer.getvalue())
    seeds = [{"text": "How do yaks stay warm?"}, {"text": "Missing.", "images": ["gone.png"]},
             {"text": "What drink is this? Draw it.", "images": ["coffee.png"]}]
    path = write_job(tmp_path, without_embed(), seed_lines=seeds)
    # The missing image's line will only be quarantined; the photograph's line is the one that needs a vision writer.
    expected = (f"{path}:{line_of(path, '- seeds.jsonl')}: seeds.files.0: {tmp_path / 'seeds.jsonl'}:3 brings images, "
                "but the writer cannot see them: roles.llm's backend 'transformers-chat' takes no image parts. Add a "
                "`vlm` role served by a vision backend (e.g. backend: transformers-vision-chat), or serve llm with one")
    assert refusal(path) == expected
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err == f"seir: error: {expected}\n"

    vision = {"backend": "transformers-vision-chat", "model": "tiny:judge"}
    with_vlm = without_embed()
    with_vlm["roles"]["vlm"] = vision
    assert "vlm" in load_job(write_job(tmp_path / "vlm", with_vlm, seed_lines=seeds)).roles
    seeing_llm = without_embed()
    seeing_llm["roles"]["llm"] = vision
    load_job(write_job(tmp_path / "llm", seeing_llm, seed_lines=seeds))
    # Without a seed that brings a picture a text-only writer is fine.
    load_job(write_job(tmp_path / "text", without_embed(), seed_lines=seeds[:2]))

    blind_vlm = without_embed()
    blind_vlm["roles"]["vlm"] = {"backend": "transformers-chat", "model": "tiny:llm"}
    assert refusal(write_job(tmp_path / "blind", blind_vlm)).endswith(
        "roles.vlm.backend: the vlm role writes about the pictures seeds bring, but backend 'transformers-chat' "
        "cannot see images: give it a vision backend (e.g. transformers-vision-chat)")


def test_edits_asked_of_a_text_to_image_role_are_refused_at_load_naming_the_role(tmp_path: Path) -> None:
    import io

    import skimage.data
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).resize((48, 32)).save(buffer, format="PNG")
    seeds = [{"text": "How do yaks stay warm?"}, {"text": "What is this cat doing? Draw it as a watercolour.",
                                                   "images": ["chelsea.png"]}]
    vision = {"backend": "transformers-vision-chat", "model": "tiny:judge"}
    text_to_image = {"backend": "diffusers-text-to-image", "model": "tiny:sd"}

    def job(folder: str, lines: list[dict[str, Any]], image: dict[str, str] = text_to_image, **seir: Any) -> Path:
        spec = without_embed(seir={"turns": 1, **seir})
        spec["roles"].update(llm=vision, image=image)
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "chelsea.png").write_bytes(buffer.getvalue())
        return write_job(tmp_path / folder, spec, seed_lines=lines)

    # seir.edit: auto (the default) with a seed that brings a picture asks for edits.
    auto = job("auto", seeds)
    assert refusal(auto) == (
        f"{auto}:{line_of(auto, 'backend: diffusers-text-to-image')}: roles.image.backend: "
        f"{tmp_path / 'auto' / 'seeds.jsonl'}:2 brings images and seir.edit is auto, so the image role must edit the "
        "user's pictures, but backend 'diffusers-text-to-image' renders from text only: serve it with an edit backend "
        "(diffusers-image-to-image, openai-image-edit), or set seir.edit: never to render every picture from its "
        "caption")
    # always asks for edits whatever the seeds bring; never asks none; text seeds under auto ask none.
    assert "roles.image.backend: seir.edit is always, so the image role must edit" in refusal(
        job("always", seeds[:1], edit="always"))
    load_job(job("never", seeds, edit="never"))
    load_job(job("text", seeds[:1]))
    for backend in ("diffusers-image-to-image", "openai-image-edit"):
        load_job(job(backend, seeds, {"backend": backend, "model": "tiny:sd"}, edit="always"))


def test_role_needs_are_what_the_loop_scorers_and_dedup_use(tmp_path: Path) -> None:
    """What each role's model server is probed for at pool start."""
    from seir.engine.spec import role_needs

    needs = role_needs(load_job(write_job(tmp_path, job_dict())))
    assert needs == {"llm": {"chat"}, "judge": {"chat", "score", "vision"}, "image": {"render"},
                     "embed": {"embed"}, "clip": {"similarity"}}
    lean = role_needs(load_job(write_job(tmp_path / "lean", without_embed(dedup={"methods": []}))))
    assert lean["judge"] == {"chat", "score", "vision"} and "embed" not in lean
