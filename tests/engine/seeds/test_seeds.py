import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from seir.engine.keys import bytes_key
from seir.engine.seeds import load_seeds
from seir.engine.spec import JobSpecError, SeedSpec, load_job
from seir.engine.store import ImageStore, as_png

INTERSYN = Path(__file__).resolve().parents[3] / "jobs" / "data" / "intersyn"  # InterSyn's lists, as jobs use them


def png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_intersyn_real_lists_pair_each_topic_with_a_slotted_template():
    spec = SeedSpec(topics_file=INTERSYN / "topics.json", templates_file=INTERSYN / "question_templates.json",
                    limit=50)
    load = load_seeds(spec)
    assert len(load.seeds) == 50
    assert all("***" not in s.text and s.topic in s.text for s in load.seeds)
    # The real template list has entries without a *** slot: they are quarantined with their line, not used.
    assert load.quarantined and all(q.field == "template" and q.line > 1 for q in load.quarantined)
    assert len({s.seed_key for s in load.seeds}) == 50


def test_template_choice_is_stable_when_topics_are_added():
    templates = ["Tell me about ***.", "Draw *** please.", "What is ***?"]
    few = load_seeds(SeedSpec(topics=["Panda", "Yak"], templates=templates))
    more = load_seeds(SeedSpec(topics=["Panda", "Yak", "Coral", "Sugarcane"], templates=templates))
    assert {s.seed_key for s in few.seeds} <= {s.seed_key for s in more.seeds}


def test_bad_lines_are_quarantined_with_file_line_and_field(tmp_path):
    (tmp_path / "ok.png").write_bytes(png("red"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(jpeg, format="JPEG")
    (tmp_path / "photo.jpg").write_bytes(jpeg.getvalue())
    lines = [
        json.dumps({"id": "good", "text": "How do yaks stay warm? Draw one.", "images": ["ok.png"]}).encode(),
        b'{"id": "cut", "text": "unterminated',
        json.dumps({"id": "no-text"}).encode(),
        json.dumps({"id": "typed", "text": 42}).encode(),
        json.dumps({"id": "blank", "text": "   "}).encode(),
        b'{"id": "latin", "text": "caf\xe9"}',
        json.dumps({"id": "gone", "text": "x y z", "images": ["missing.png"]}).encode(),
        json.dumps({"id": "corrupt", "text": "x y z", "images": ["broken.png"]}).encode(),
        json.dumps({"id": "extra", "text": "x y z", "colour": "red"}).encode(),
        json.dumps({"topic": "Coral", "template": "Draw *** for me"}).encode(),
        json.dumps({"id": "again", "text": "How do yaks stay warm? Draw one.", "images": ["ok.png"]}).encode(),
        json.dumps({"id": "jpeg", "text": "What is this?", "images": ["photo.jpg"], "turns": 2}).encode(),
        b"[1, 2]",
    ]
    path = tmp_path / "seeds.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    store = ImageStore(tmp_path / "out")
    load = load_seeds(SeedSpec(files=[path]), store.put)
    assert [s.seed_id for s in load.seeds] == ["good", load.seeds[1].seed_id, "jpeg"]
    assert load.seeds[1].text == "Draw Coral for me" and load.seeds[1].source == f"{path}:10"
    found = {(q.line, q.field): q.reason for q in load.quarantined}
    assert set(found) == {(2, "(line)"), (3, "text"), (4, "text"), (5, "text"), (6, "(line)"), (7, "images[0]"),
                          (8, "images[0]"), (9, "colour"), (11, "text"), (13, "(line)")}
    assert "malformed JSON" in found[(2, "(line)")]
    assert "expected str, got int" in found[(4, "text")]
    assert "invalid UTF-8" in found[(6, "(line)")]
    assert "not found" in found[(7, "images[0]")]
    assert "not a readable image" in found[(8, "images[0]")]
    assert "duplicate of the seed at" in found[(11, "text")]
    assert all(q.source == str(path) for q in load.quarantined)
    # Images are stored as PNG and keyed by that encoding, whatever format the seed brought.
    jpeg_seed = load.seeds[2]
    assert jpeg_seed.turns == 2 and store.get(jpeg_seed.images[0]).startswith(b"\x89PNG")
    assert jpeg_seed.images[0] == bytes_key(as_png(jpeg.getvalue()))


def test_a_seed_line_may_ask_for_up_to_32_turns(tmp_path):
    (tmp_path / "ok.png").write_bytes(png("red"))
    lines = [{"id": "long", "text": "Tell me about the sea.", "turns": 32},
             {"id": "longer", "text": "Tell me about the sky.", "turns": 33},
             {"id": "late", "text": "And this?", "turn_images": [[]] * 31 + [["ok.png"]]},
             {"id": "later", "text": "And that?", "turn_images": [[]] * 32 + [["ok.png"]]}]
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    load = load_seeds(SeedSpec(files=[path]), ImageStore(tmp_path / "out").put)
    assert [(s.seed_id, s.turns, len(s.turn_images)) for s in load.seeds] == [("long", 32, 0), ("late", None, 32)]
    found = {(q.line, q.field): q.reason for q in load.quarantined}
    assert found == {(2, "turns"): "turns must be 1..32, got 33",
                     (4, "turn_images"): "images for 33 turns, over the 32 turn limit"}


def test_missing_seed_file_is_an_error_naming_the_spec_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"seeds\.files"):
        load_seeds(SeedSpec(files=[tmp_path / "absent.jsonl"]))


def photo() -> bytes:
    """A valid JPEG photo-like image (a colour gradient), the kind a seed brings."""
    image = Image.linear_gradient("L").resize((64, 48)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


_opened: list[list[str]] = []  # the watching test's list of every file this process opened


def _record_open(event: str, args: tuple) -> None:
    if event == "open" and _opened and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened[-1].append(os.path.realpath(os.fsdecode(args[0])))


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """Every path opened (by any means: Path, open(), os.open) while the test runs, via the interpreter's audit
    hook; a hook cannot be removed, so one is added per process and watches only while a test holds the list."""
    if not getattr(sys, "_seir_open_hook", False):
        sys.addaudithook(_record_open)
        sys._seir_open_hook = True
    _opened.append([])
    yield _opened[-1]
    _opened.pop()


def test_image_paths_that_leave_the_read_roots_are_quarantined_without_being_opened(tmp_path, opened):
    job, outside = tmp_path / "job", tmp_path / "outside"
    job.mkdir()
    outside.mkdir()
    (outside / "photo.jpg").write_bytes(photo())  # a valid image: only where it lies refuses it
    (job / "inside.jpg").write_bytes(photo())
    (job / "link.jpg").symlink_to(outside / "photo.jpg")
    (job / "pictures").symlink_to(outside, target_is_directory=True)
    refs = ["../outside/photo.jpg", str(outside / "photo.jpg"), "link.jpg", "pictures/photo.jpg", "inside.jpg"]
    path = job / "seeds.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "text": f"What is in picture {i}?", "images": [ref]}) + "\n"
                            for i, ref in enumerate(refs)))
    opened.clear()  # what the test wrote
    load = load_seeds(SeedSpec(files=[path]))
    assert [s.seed_id for s in load.seeds] == ["s4"]
    assert load.seeds[0].images[0] == bytes_key(as_png(photo()))
    assert [(q.source, q.line, q.field) for q in load.quarantined] == [(str(path), n, "images[0]") for n in range(1, 5)]
    for q, ref in zip(load.quarantined, refs, strict=False):
        assert f"image {ref} is outside the folders seeds may read ({job})" in q.reason and "not opened" in q.reason
    assert str(job / "inside.jpg") in opened and str(path) in opened
    assert not [p for p in opened if p.startswith(str(outside))], opened


def test_images_root_and_declared_roots_are_read_and_nothing_beyond(tmp_path, opened):
    job, photos, shared, elsewhere = (tmp_path / name for name in ("job", "photos", "shared", "elsewhere"))
    for folder in (job, photos, shared, elsewhere):
        folder.mkdir()
    (photos / "cat.jpg").write_bytes(photo())
    (shared / "dog.png").write_bytes(png("green"))
    (elsewhere / "fox.png").write_bytes(png("orange"))
    (job / "seeds.jsonl").write_text("".join(json.dumps({"text": f"What is this {i}?", "images": [ref]}) + "\n"
                                             for i, ref in enumerate(["cat.jpg", "../shared/dog.png",
                                                                      "../elsewhere/fox.png"])))
    (job / "job.yaml").write_text("""\
name: roots
seeds: {files: [seeds.jsonl], images_root: ../photos, roots: [../shared]}
roles:
  llm: {backend: transformers-chat, model: tiny:llm}
  vlm: {backend: transformers-vision-chat, model: tiny:judge}
  judge: {backend: transformers-vision-chat, model: tiny:judge}
  image: {backend: diffusers-image-to-image, model: tiny:sd}
""")
    opened.clear()  # what the test wrote
    spec = load_job(job / "job.yaml")
    assert spec.seeds.images_root == photos and spec.seeds.roots == [shared]
    load = load_seeds(spec.seeds)
    # cat.jpg starts at images_root; ../shared/dog.png from there lands in a declared root; the fox is in neither.
    assert [s.images for s in load.seeds] == [(bytes_key(as_png(photo())),), (bytes_key(png("green")),)]
    [refused] = load.quarantined
    assert (refused.line, refused.field) == (3, "images[0]") and "../elsewhere/fox.png is outside" in refused.reason
    assert not [p for p in opened if p.startswith(str(elsewhere))], opened


def test_a_seed_file_outside_the_job_folder_and_its_roots_is_refused_at_load(tmp_path):
    job, other = tmp_path / "job", tmp_path / "other"
    job.mkdir()
    other.mkdir()
    (other / "seeds.jsonl").write_text(json.dumps({"text": "How do yaks stay warm?"}) + "\n")
    text = """\
name: away
seeds:
  files: [../other/seeds.jsonl]
roles:
  llm: {backend: transformers-chat, model: tiny:llm}
  judge: {backend: transformers-vision-chat, model: tiny:judge}
  image: {backend: diffusers-text-to-image, model: tiny:sd}
"""
    (job / "job.yaml").write_text(text)
    with pytest.raises(JobSpecError, match=r"job\.yaml:3: seeds\.files\.0: .*outside the folders this job may read"):
        load_job(job / "job.yaml")
    (job / "job.yaml").write_text(text.replace("  files: [../other/seeds.jsonl]\n",
                                               "  files: [../other/seeds.jsonl]\n  roots: [../other]\n"))
    assert [s.text for s in load_seeds(load_job(job / "job.yaml").seeds).seeds] == ["How do yaks stay warm?"]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` grey pixels and holds none: a decompression bomb's header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_per_turn_images_and_bad_image_lines_are_quarantined_with_field_and_reason(tmp_path):
    for name, color in (("a.png", "red"), ("b.png", "green"), ("c.png", "blue")):
        (tmp_path / name).write_bytes(png(color))
    (tmp_path / "bomb.png").write_bytes(png_header_only(20_000, 20_000))  # over PIL's own bomb limit
    (tmp_path / "huge.png").write_bytes(png_header_only(5_000, 5_000))  # under PIL's, over the judge's pixel limit
    (tmp_path / "broken.png").write_bytes(png("red")[:40])
    (tmp_path.parent / "outside.png").write_bytes(png("red"))
    rows = [
        {"id": "turns", "text": "Look at these.", "turn_images": [["a.png"], [], ["b.png", "c.png"], []]},
        {"id": "many", "text": "Too many.", "images": ["a.png"] * 21},
        {"id": "many-turns", "text": "Too many.", "turn_images": [["a.png"] * 11, ["b.png"] * 10]},
        {"id": "bomb", "text": "Bomb.", "images": ["a.png", "bomb.png"]},
        {"id": "huge", "text": "Huge.", "images": ["huge.png"]},
        {"id": "broken", "text": "Broken.", "turn_images": [["a.png"], ["broken.png"]]},
        {"id": "out", "text": "Outside.", "turn_images": [[], ["../outside.png"]]},
        {"id": "both", "text": "Both.", "images": ["a.png"], "turn_images": [["b.png"]]},
        {"id": "long", "text": "Long.", "turn_images": [["a.png"], ["b.png"]], "turns": 1},
        {"id": "flat", "text": "Flat.", "turn_images": ["a.png"]},
    ]
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    load = load_seeds(SeedSpec(files=[path]))
    [seed] = load.seeds
    key = {name: bytes_key(png(color)) for name, color in (("a", "red"), ("b", "green"), ("c", "blue"))}
    assert seed.turn_images == ((key["a"],), (), (key["b"], key["c"]))  # trailing empty turns dropped
    assert seed.images == (key["a"], key["b"], key["c"])
    found = {q.line: (q.field, q.reason) for q in load.quarantined}
    assert all(q.source == str(path) for q in load.quarantined)
    assert found[2] == ("images", "21 images, over the 20 a seed may bring")
    assert found[3] == ("turn_images", "21 images, over the 20 a seed may bring")
    assert found[4][0] == "images[1]" and "decompression bomb" in found[4][1]
    assert found[5][0] == "images[0]" and "5000x5000, over the" in found[5][1] and "not decoded" in found[5][1]
    assert found[6][0] == "turn_images[1][0]" and "not a readable image" in found[6][1]
    assert found[7][0] == "turn_images[1][0]" and "outside the folders seeds may read" in found[7][1]
    assert found[8] == ("turn_images", "give images (the first turn's) or turn_images (per turn), not both")
    assert found[9][0] == "turn_images" and "images for 2 turns, but the seed has turns: 1" in found[9][1]
    assert found[10] == ("turn_images[0]", "each turn's images are a list, got str")


def test_seed_images_stream_into_the_store_and_only_keys_are_kept(tmp_path):
    (tmp_path / "a.png").write_bytes(png("red"))
    (tmp_path / "b.jpg").write_bytes(photo())
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"text": f"What is in picture {i}?", "images": ["a.png", "b.jpg"]}) + "\n"
                            for i in range(50)))
    stored: list[bytes] = []

    def put(data: bytes) -> str:
        stored.append(data)
        return bytes_key(data)

    load = load_seeds(SeedSpec(files=[path]), put)
    assert len(load.seeds) == 50 and not hasattr(load, "images")
    # Each file is read and stored once however many seeds name it; seeds hold keys (of the stored PNG bytes) only.
    assert [bytes_key(data) for data in stored] == [bytes_key(png("red")), bytes_key(as_png(photo()))]
    assert all(seed.images == tuple(bytes_key(data) for data in stored) for seed in load.seeds)
