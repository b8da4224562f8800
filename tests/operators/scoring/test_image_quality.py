"""Image quality without a reference: a degraded copy scores strictly lower than its clean original on the metric
that degradation attacks, and bad pictures are refused or converted with a reason, never crashing a batch."""

from __future__ import annotations

import io
import math
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from seir.operators.registry import lookup
from seir.operators.scoring.image_quality import ImageQualityScorer
from seir.operators.scoring.rubrics import TurnView


def scene(size: int = 512) -> Image.Image:
    """Gradients, hard-edged shapes, thin lines, stripes and a checkerboard, placed off the 8-pixel JPEG grid."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgb = np.stack([40 + 150 * x, 60 + 120 * y, 170 - 100 * x * y], axis=-1)
    rgb[(x > 0.55) & (y > 0.6) & (np.sin(2 * np.pi * x * size / 11.0) > 0)] = [225, 200, 60]
    rgb[((np.floor(x * size / 13) + np.floor(y * size / 13)) % 2 == 0) & (x < 0.3) & (y > 0.65)] = [30, 30, 40]
    rgb += np.random.default_rng(0).normal(0, 1.0, rgb.shape)  # a camera's faint grain
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    s = size / 512
    draw.ellipse([v * s for v in (61, 45, 237, 221)], fill=(200, 40, 50), outline=(20, 20, 20), width=3)
    draw.rectangle([v * s for v in (291, 75, 459, 187)], fill=(40, 150, 90))
    draw.polygon([(101 * s, 301 * s), (253 * s, 263 * s), (203 * s, 413 * s)], fill=(240, 240, 230))
    for i in range(9):
        draw.line([(300 + 7 * i) * s, 230 * s, (330 + 11 * i) * s, 310 * s], fill=(10, 10, 10), width=1)
    return image


def encode(image: Image.Image, fmt: str = "PNG", **options: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noisy(image: Image.Image, sigma: float) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + np.random.default_rng(1).normal(0, sigma, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


DEGRADATIONS = {
    "blurred": ("sharpness", lambda im: encode(im.filter(ImageFilter.GaussianBlur(3)))),
    "over-exposed": ("exposure", lambda im: encode(ImageEnhance.Brightness(im).enhance(2.0))),
    "noisy": ("noise", lambda im: encode(noisy(im, 20))),
    "jpeg-crushed": ("blockiness", lambda im: encode(im, "JPEG", quality=5)),
    "tiny": ("resolution", lambda im: encode(im.resize((96, 96), Image.Resampling.LANCZOS))),
    "washed-out": ("contrast", lambda im: encode(ImageEnhance.Contrast(im).enhance(0.2))),
    "greyed": ("colourfulness", lambda im: encode(ImageEnhance.Color(im).enhance(0.0))),
}


@pytest.fixture(scope="module")
def clean() -> Image.Image:
    return scene()


def score(data: bytes | None):
    return ImageQualityScorer().score_image(data)


def test_clean_scene_scores_high(clean: Image.Image) -> None:
    result = score(encode(clean))
    assert result.reasons == []
    assert result.scores["image_quality"] > 4.5
    assert all(result.raw[f"{metric}_score"] >= 4.5 for metric, _ in DEGRADATIONS.values())


@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_degraded_copy_scores_strictly_lower_on_its_metric(clean: Image.Image, name: str) -> None:
    metric, degrade = DEGRADATIONS[name]
    original, copy = score(encode(clean)), score(degrade(clean))
    assert copy.raw[f"{metric}_score"] < original.raw[f"{metric}_score"], (metric, copy.raw, original.raw)
    assert copy.scores["image_quality"] < original.scores["image_quality"]


def test_a_mild_defect_costs_less_than_a_severe_one(clean: Image.Image) -> None:
    mild, severe = score(encode(clean, "JPEG", quality=40)), score(encode(clean, "JPEG", quality=5))
    assert severe.raw["blockiness_score"] < mild.raw["blockiness_score"]
    assert severe.scores["image_quality"] < mild.scores["image_quality"]


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header is rewritten to claim another size (a decompression bomb's header)."""
    data = bytearray(encode(Image.new("L", (1, 1))))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


BAD = {
    "missing": (None, "no image"),
    "empty": (b"", "image is empty"),
    "not an image": (b"GIF89a but not really", "does not decode"),
    "truncated": (encode(scene(64))[:300], "does not decode"),
    "1x1": (encode(Image.new("RGB", (1, 1), "red")), "too small"),
    "over the pixel limit": (png_claiming(5000, 5000), "pixel limit"),
    "decompression bomb": (png_claiming(100_000, 100_000), "decompression bomb"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_pictures_score_zero_with_a_reason(name: str) -> None:
    data, reason = BAD[name]
    started = time.perf_counter()
    result = score(data)
    assert time.perf_counter() - started < 1.0  # nothing big was allocated
    assert result.scores == {"image_quality": 0.0}
    assert any(reason in r for r in result.reasons), result.reasons


def odd_modes(image: Image.Image) -> dict[str, bytes]:
    grey = image.convert("L")
    sixteen = Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257)  # same picture, 16-bit
    rgba = image.convert("RGBA")
    rgba.putalpha(200)
    return {
        "CMYK": encode(image.convert("CMYK"), "JPEG", quality=95),
        "P": encode(image.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)),
        "I;16": encode(sixteen),
        "RGBA": encode(rgba),
        "LA": encode(grey.convert("LA")),
        "L": encode(grey),
    }


def test_odd_modes_are_converted_and_scored(clean: Image.Image) -> None:
    results = {mode: score(data) for mode, data in odd_modes(clean).items()}
    for mode, result in results.items():
        assert 0 < result.scores["image_quality"] <= 5, mode
        assert all(math.isfinite(v) for v in result.raw.values()), mode
        assert result.reasons == ([] if mode == "L" else [f"image converted from mode {mode}"])
    # 16-bit is rescaled, not clipped to white: it measures like its 8-bit original
    assert abs(results["I;16"].raw["rms_contrast"] - results["L"].raw["rms_contrast"]) < 0.01
    assert results["I;16"].raw["clipped_share"] < 0.01


def test_a_batch_with_bad_pictures_still_scores_the_good_ones(clean: Image.Image) -> None:
    scorer = lookup("scorer", "image-quality")()
    views = [TurnView("q", image=data) for data in (encode(clean), b"junk", None, BAD["decompression bomb"][0])]
    results = scorer.score_turns(views)
    assert [r.scorer for r in results] == ["image-quality"] * 4
    assert results[0].scores["image_quality"] > 4.5
    assert [r.scores["image_quality"] for r in results[1:]] == [0.0, 0.0, 0.0]


def test_weights_are_validated_and_part_of_the_config() -> None:
    with pytest.raises(ValueError, match="weights"):
        ImageQualityScorer(weights={"sharpness": 1.0, "vibes": 1.0})
    sharp_only = ImageQualityScorer(weights={"sharpness": 1.0})
    assert sharp_only.config()["weights"] == {"sharpness": 1.0}
    result = sharp_only.score_image(encode(scene(128)))
    assert result.scores["image_quality"] == pytest.approx(result.raw["sharpness_score"])
