"""`seir seeds from-images` on scikit-image's real photographs: related pictures grouped, and the file it writes is an
ordinary seed file that loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from seir.engine.cli import main
from seir.engine.seeds import clip_embeddings, group_images, images_in, load_seeds
from seir.engine.spec import SeedSpec


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    left, right, _ = skimage.data.stereo_motorcycle()
    pictures = {"astronaut": skimage.data.astronaut(), "chelsea": skimage.data.chelsea(),
                "coffee": skimage.data.coffee(), "rocket": skimage.data.rocket(),
                "hubble": skimage.data.hubble_deep_field(), "retina": skimage.data.retina(),
                "motorcycle_left": left, "motorcycle_right": right}
    for name, pixels in pictures.items():
        image = Image.fromarray(pixels).convert("RGB")
        image.thumbnail((160, 160))
        image.save(folder / f"{name}.png")
    (folder / "notes.txt").write_text("not a picture")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return folder


def test_the_two_motorcycle_views_are_grouped_and_nothing_else(photos: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "seeds" / "photos.jsonl"
    assert main(["seeds", "from-images", str(photos), "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    groups = sorted(sorted(Path(p).stem for p in line["images"]) for line in lines)
    assert groups == [["astronaut"], ["chelsea"], ["coffee"], ["hubble"], ["motorcycle_left", "motorcycle_right"],
                      ["retina"], ["rocket"]]
    captured = capsys.readouterr()
    assert f"skipped {photos / 'broken.png'}" in captured.err and "7 seeds from 8 pictures" in captured.out
    # An ordinary seed file: paths relative to it, every line loads, each picture stored once.
    load = load_seeds(SeedSpec(files=[out], roots=[photos]))
    assert len(load.seeds) == 7 and not load.quarantined
    assert sorted(len(seed.images) for seed in load.seeds) == [1, 1, 1, 1, 1, 1, 2]


def test_none_makes_one_seed_per_picture_and_texts_are_taken_in_turn(photos: Path, tmp_path: Path) -> None:
    texts = tmp_path / "topics.txt"
    texts.write_text("Space travel\nBreakfast\n")
    out = tmp_path / "one.jsonl"
    assert main(["seeds", "from-images", str(photos), "--group-by", "none", "--texts", str(texts),
                 "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 8 and all(len(line["images"]) == 1 for line in lines)
    assert [line["text"] for line in lines[:3]] == ["Space travel", "Breakfast", "Space travel"]


def test_edit_seeds_ask_for_the_change_each_text_names(photos: Path, tmp_path: Path) -> None:
    changes = tmp_path / "changes.txt"
    changes.write_text("Make it night.\nas a pencil sketch\n")
    out = tmp_path / "edits.jsonl"
    assert main(["seeds", "from-images", str(photos), "--edit", "--texts", str(changes), "--out", str(out)]) == 0
    lines = {Path(line["images"][0]).stem: line for line in map(json.loads, out.read_text().splitlines())}
    texts = [line["text"] for line in lines.values()]
    assert texts[0] == "What is in this picture? Then edit it: Make it night."
    assert texts[1] == "What is in this picture? Then edit it: as a pencil sketch."
    pair = next(line for line in lines.values() if len(line["images"]) == 2)
    assert pair["text"].startswith("What is in these 2 pictures? Then edit the first: ")
    # Without texts, each seed asks for the default change.
    default = tmp_path / "default.jsonl"
    assert main(["seeds", "from-images", str(photos), "--edit", "--group-by", "none", "--out", str(default)]) == 0
    assert {json.loads(line)["text"] for line in default.read_text().splitlines()} == {
        "What is in this picture? Then edit it: keep its subject and layout, and make it a watercolour painting."}


def test_max_images_caps_a_group(photos: Path) -> None:
    paths = images_in(photos)
    loose = group_images(paths, lambda images: __import__("numpy").ones((len(images), 4)) / 2, 0.5, max_images=3)
    assert sorted(map(len, loose.groups)) == [2, 3, 3]  # all alike, capped at 3 per group
    assert [path.name for path, _ in loose.skipped] == ["broken.png"]


def test_clip_grouping_runs_a_from_pretrained_model(photos: Path, tiny_models: dict[str, Path]) -> None:
    """The tiny CLIP has random weights, so only the path is checked: every picture lands in exactly one group."""
    paths = images_in(photos)
    grouping = group_images(paths, clip_embeddings("tiny:clip"), 0.99, max_images=20)
    assert sorted(p for group in grouping.groups for p in group) == sorted(p for p in paths if p.name != "broken.png")
