"""The picture families users run, at tiny size from their real pipelines: every render and edit is written at the
job's size by the pipeline itself (never rendered at the family's default size and shrunk), sampling settings a job
leaves unset are the family's own, and a checkpoint served by a backend that cannot use it is refused at load with
the backend that can."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seir.engine.run.planning import with_family_sampling
from seir.engine.spec import JobSpec
from seir.operators.backends.base import RenderRequest
from seir.operators.backends.diffusers_image import DiffusersImageToImage, DiffusersInstructEdit, DiffusersTextToImage
from seir.operators.backends.tiny import PICTURE_NAMES, build_tiny_models
from tests.engine.conftest import job_dict

pytestmark = pytest.mark.slow  # each family loads its own text encoders and denoiser: seconds apiece

RENDERERS = ("sd", "sdxl", "sd3", "flux", "qwen-image")
INSTRUCTION_EDITS = ("sd-instruct-edit", "flux-kontext", "qwen-image-edit")
# The guidance each family's own pipeline defaults to (Qwen-Image guides by true CFG instead: None).
FAMILY_GUIDANCE = {"sd": 7.5, "sdxl": 5.0, "sd3": 7.0, "flux": 3.5, "qwen-image": None, "sd-instruct-edit": 7.5,
                   "flux-kontext": 3.5, "qwen-image-edit": None}
WIDTH, HEIGHT = 64, 48  # not square, and not any family's default size


def source(seed: int, width: int, height: int) -> bytes:
    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def asked(edits: bool) -> list[RenderRequest]:
    """Two renders from text and, with ``edits``, two edits of pictures of other sizes, in one call."""
    texts = [RenderRequest("a red fox near a stone bridge", seed=1, width=WIDTH, height=HEIGHT, steps=2),
             RenderRequest("two small boats in a quiet harbor", seed=2, width=WIDTH, height=HEIGHT, steps=2)]
    changes = [RenderRequest("make it snow", seed=3, width=WIDTH, height=HEIGHT, steps=2, source=source(3, 40, 30),
                             strength=0.6),
               RenderRequest("turn the sky red", seed=4, width=WIDTH, height=HEIGHT, steps=2,
                             source=source(4, 96, 96), strength=0.6)]
    return texts + changes if edits else texts


def folder(name: str, tiny_models: dict[str, Path], tiny_pictures: dict[str, Path]) -> str:
    return str({**tiny_models, **tiny_pictures}[name])


def written_at_the_asked_size(backend: DiffusersTextToImage, requests: list[RenderRequest],
                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="seir.operators.backends.diffusers_image"):
        results = backend.render(requests)
    assert [Image.open(io.BytesIO(r.png)).size for r in results] == [(WIDTH, HEIGHT)] * len(requests)
    assert [(r.width, r.height) for r in results] == [(WIDTH, HEIGHT)] * len(requests)
    assert "where" not in caplog.text, caplog.text  # rendered at the size asked, not resized afterwards


@pytest.mark.parametrize("name", RENDERERS)
def test_renders_and_edits_are_the_jobs_size(name: str, tiny_models: dict[str, Path], tiny_pictures: dict[str, Path],
                                            caplog: pytest.LogCaptureFixture) -> None:
    backend = DiffusersImageToImage(folder(name, tiny_models, tiny_pictures))
    written_at_the_asked_size(backend, asked(edits=True), caplog)


@pytest.mark.parametrize("name", INSTRUCTION_EDITS)
def test_instruction_edits_edit_and_render_at_the_jobs_size(name: str, tiny_models: dict[str, Path],
                                                           tiny_pictures: dict[str, Path],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    backend = DiffusersInstructEdit(folder(name, tiny_models, tiny_pictures))
    written_at_the_asked_size(backend, asked(edits=True), caplog)


@pytest.mark.parametrize("name", [*RENDERERS, *INSTRUCTION_EDITS])
def test_unset_guidance_is_the_familys_own(name: str, tiny_models: dict[str, Path], tiny_pictures: dict[str, Path],
                                          ) -> None:
    path = folder(name, tiny_models, tiny_pictures)
    backend = DiffusersInstructEdit if name in INSTRUCTION_EDITS else DiffusersImageToImage
    assert backend.family_sampling(path) == {"guidance_scale": FAMILY_GUIDANCE[name]}
    job = job_dict(roles={**job_dict()["roles"], "image": {"backend": backend.name, "model": path}})
    assert with_family_sampling(JobSpec.model_validate(job)).seir.guidance_scale == FAMILY_GUIDANCE[name]
    job_set = {**job, "seir": {**job["seir"], "guidance_scale": 2.0}}
    assert with_family_sampling(JobSpec.model_validate(job_set)).seir.guidance_scale == 2.0


def test_a_checkpoint_is_refused_by_a_backend_that_cannot_use_it(tiny_pictures: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"instruction-edit checkpoint \(FluxKontextPipeline\).*diffusers-instruct"):
        DiffusersTextToImage(str(tiny_pictures["flux-kontext"]))
    with pytest.raises(ValueError, match=r"not an instruction-edit checkpoint \(FluxPipeline.*diffusers-image-to"):
        DiffusersInstructEdit(str(tiny_pictures["flux"]))


def test_two_picture_family_builds_are_byte_identical(tiny_pictures: dict[str, Path], tmp_path: Path) -> None:
    from seir.operators.backends.base import fingerprint_model

    again = build_tiny_models(tmp_path, PICTURE_NAMES)
    for name in PICTURE_NAMES:
        assert fingerprint_model(str(again[name])) == fingerprint_model(str(tiny_pictures[name])), name


def test_a_pipeline_diffusers_does_not_name_leaves_guidance_to_the_pipeline(tmp_path: Path) -> None:
    """A community pipeline's checkpoint: its family's guidance is not known here, so none is keyed or sent."""
    (tmp_path / "model_index.json").write_text('{"_class_name": "MyCommunityPipeline", "_diffusers_version": "0.42.1"}')
    assert DiffusersImageToImage.family_sampling(str(tmp_path)) == {}
