"""The families users run, in the roles they fill, through a real run of the demo's shape (seeds with photographs,
two turns, one refinement round) on local Ray: every call succeeds and dialogues are accepted. Marked ``matrix`` so
it runs apart from the fast tier (``pytest -m matrix``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from tests.engine.conftest import TOPICS, run_job, write_job
from tests.engine.run.test_engines import engine_job
from tests.engine.run.test_image_seeds import VLM, image_job, save_photo

pytestmark = [pytest.mark.matrix, pytest.mark.slow]

IMAGE_TO_IMAGE, INSTRUCT_EDIT = "diffusers-image-to-image", "diffusers-instruct-edit"


@dataclass(frozen=True)
class Cast:
    """Who fills each role of one run: every family in each role it can fill somewhere in the matrix."""

    writer: str  # text
    judge: str  # vision-language
    vision_writer: str  # vision-language: writes the turns whose seeds bring pictures
    image_backend: str  # edits the seeds' photographs, renders the turns without one
    image: str
    scorer: str | None = None  # an image-text similarity model beside the judge

    def __str__(self) -> str:
        return "+".join(name for name in (self.writer, self.judge, self.vision_writer, self.image, self.scorer) if name)


CASTS = [Cast("qwen3", "qwen2.5-vl", "llava-onevision", INSTRUCT_EDIT, "flux-kontext", "siglip2"),
         Cast("gemma3", "gemma3-vl", "internvl", INSTRUCT_EDIT, "qwen-image-edit"),
         Cast("llama3", "qwen3-vl", "idefics3", IMAGE_TO_IMAGE, "flux"),
         Cast("qwen3", "llava-onevision", "gemma3-vl", IMAGE_TO_IMAGE, "sd3", "clip"),
         Cast("gemma3", "internvl", "qwen2.5-vl", IMAGE_TO_IMAGE, "sdxl"),
         Cast("llama3", "idefics3", "qwen3-vl", IMAGE_TO_IMAGE, "qwen-image", "siglip2")]


@pytest.mark.parametrize("cast", CASTS, ids=str)
def test_a_family_runs_the_demo_shape_with_every_call_answered(
        cast: Cast, ray_local: None, tiny_families: dict[str, Path], tiny_pictures: dict[str, Path],
        tmp_path: Path) -> None:
    save_photo(skimage.data.astronaut(), tmp_path / "astronaut.png")
    save_photo(skimage.data.coffee(), tmp_path / "coffee.png")
    seeds = [{"id": "pair", "text": "What do these two photos show? Draw them side by side.",
              "images": ["astronaut.png", "coffee.png"]},
             {"id": "later", "text": "How do yaks stay warm in winter? Draw one in the snow.",
              "turn_images": [[], ["coffee.png"]]},
             {"id": "plain", "text": "What does a snow leopard eat? Draw one hunting."}]
    job = image_job(f"matrix-{cast.writer}", vlm={**VLM, "model": f"tiny:{cast.vision_writer}"})
    job["seeds"] = {"topics": [], "templates": []}  # the seed file's alone
    job["roles"]["llm"]["model"] = f"tiny:{cast.writer}"
    job["roles"]["judge"] = {**job["roles"]["judge"], "model": f"tiny:{cast.judge}"}
    job["roles"]["image"] = {**job["roles"]["image"], "backend": cast.image_backend, "model": f"tiny:{cast.image}"}
    job["seir"] = {**job["seir"], "image_width": 64, "image_height": 48, "image_steps": 2}
    if cast.scorer:
        job["roles"]["clip"] = {"backend": "clip", "model": f"tiny:{cast.scorer}", "num_cpus": 0.2}
        for dimension in ("image_content", "image_text_synergy"):
            job["scoring"]["weights"][dimension] = {"judge": 0.5, "clip": 0.5}
    run = run_job(write_job(tmp_path, job, seed_lines=seeds), tmp_path / "out")
    roles = dict(run.sql("SELECT role, count(*) FROM model_calls GROUP BY ALL"))
    assert {"llm", "vlm", "judge", "image", *(["clip"] if cast.scorer else [])} <= roles.keys(), roles
    assert run.sql("SELECT role, error FROM model_calls WHERE error IS NOT NULL LIMIT 3") == []
    models = dict(run.sql("SELECT role, model_id FROM models"))
    assert models == {"llm": f"tiny:{cast.writer}", "judge": f"tiny:{cast.judge}", "vlm": f"tiny:{cast.vision_writer}",
                      "image": f"tiny:{cast.image}", **({"clip": f"tiny:{cast.scorer}"} if cast.scorer else {})}
    # Every picture made was written at the job's size, as the images table says; the seeds' photographs were edited.
    made = run.sql("SELECT DISTINCT path, width, height FROM images JOIN drafts USING (image_key)")
    assert made and {(w, h) for _, w, h in made} == {(64, 48)}
    assert all(Image.open(run.out / path).size == (w, h) for path, w, h in made)
    assert run.sql("SELECT count(*) FROM drafts WHERE source_key IS NOT NULL")[0][0] > 0
    assert run.summary["accepted"] == 3, run.log


@pytest.mark.engine
@pytest.mark.parametrize("writer", ["qwen3", "gemma3", "llama3"])
def test_a_text_family_writes_a_whole_run_through_a_vllm_engine(writer: str, ray_local: None,
                                                               tiny_families: dict[str, Path], tmp_path: Path) -> None:
    """The text families vLLM's CPU build serves, as the writer of a whole run inside the role's actor."""
    job = engine_job(f"vllm-{writer}", uuid.uuid4().hex)
    job["roles"]["llm"]["model"] = f"tiny:{writer}"
    job["seeds"]["topics"] = TOPICS[:4]
    run = run_job(write_job(tmp_path, job), tmp_path / "out")
    assert run.sql("SELECT role, error FROM model_calls WHERE error IS NOT NULL LIMIT 3") == []
    assert dict(run.sql("SELECT role, model_id FROM models"))["llm"] == f"tiny:{writer}"
    assert run.sql("SELECT count(*) FROM model_calls WHERE role = 'llm'")[0][0] > 0
    assert run.summary["accepted"] == 4, run.log
