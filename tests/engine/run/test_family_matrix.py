"""The families users run, in the roles they fill, through a real run of the demo's shape (seeds with photographs,
two turns, one refinement round) on local Ray: every call succeeds and dialogues are accepted. Marked ``matrix`` so
it runs apart from the fast tier (``pytest -m matrix``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import skimage.data

from tests.engine.conftest import run_job, write_job
from tests.engine.run.test_image_seeds import VLM, image_job, save_photo

pytestmark = [pytest.mark.matrix, pytest.mark.slow]

# (text writer, vision-language judge and vision writer): each family in the roles it can fill.
FAMILIES = [("qwen3", "qwen2.5-vl"), ("gemma3", "gemma3-vl"), ("llama3", "qwen3-vl")]


@pytest.mark.parametrize(("writer", "judge"), FAMILIES, ids=[f"{w}+{j}" for w, j in FAMILIES])
def test_a_family_runs_the_demo_shape_with_every_call_answered(
        writer: str, judge: str, ray_local: None, tiny_families: dict[str, Path], tmp_path: Path) -> None:
    save_photo(skimage.data.astronaut(), tmp_path / "astronaut.png")
    save_photo(skimage.data.coffee(), tmp_path / "coffee.png")
    seeds = [{"id": "pair", "text": "What do these two photos show? Draw them side by side.",
              "images": ["astronaut.png", "coffee.png"]},
             {"id": "later", "text": "How do yaks stay warm in winter? Draw one in the snow.",
              "turn_images": [[], ["coffee.png"]]},
             {"id": "plain", "text": "What does a snow leopard eat? Draw one hunting."}]
    vision = {**VLM, "model": f"tiny:{judge}"}
    job = image_job(f"matrix-{writer}", vlm=vision)
    job["seeds"] = {"topics": [], "templates": []}  # the seed file's alone
    job["roles"]["llm"]["model"] = f"tiny:{writer}"
    job["roles"]["judge"] = {**job["roles"]["judge"], "model": f"tiny:{judge}"}
    run = run_job(write_job(tmp_path, job, seed_lines=seeds), tmp_path / "out")
    roles = dict(run.sql("SELECT role, count(*) FROM model_calls GROUP BY ALL"))
    assert {"llm", "vlm", "judge", "image"} <= roles.keys(), roles
    assert run.sql("SELECT role, error FROM model_calls WHERE error IS NOT NULL LIMIT 3") == []
    models = dict(run.sql("SELECT role, model_id FROM models"))
    assert models["llm"] == f"tiny:{writer}" and models["judge"] == models["vlm"] == f"tiny:{judge}"
    assert run.summary["accepted"] == 3, run.log
