import io
import json
from pathlib import Path

import pytest
from PIL import Image

from seir.engine.images import as_png
from seir.engine.keys import bytes_key
from seir.engine.seeds import load_seeds
from seir.engine.spec import SeedSpec

INTERSYN = Path(__file__).resolve().parents[2] / "jobs" / "data" / "intersyn"  # InterSyn's lists, as jobs use them


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
    load = load_seeds(SeedSpec(files=[path]))
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
    assert jpeg_seed.turns == 2 and load.images[jpeg_seed.images[0]].startswith(b"\x89PNG")
    assert jpeg_seed.images[0] == bytes_key(as_png(jpeg.getvalue()))


def test_missing_seed_file_is_an_error_naming_the_spec_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"seeds\.files"):
        load_seeds(SeedSpec(files=[tmp_path / "absent.jsonl"]))
