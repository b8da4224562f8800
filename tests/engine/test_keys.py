import math

import pytest

from seir.engine.keys import bytes_key, canonical_json, content_key, normalize_text, text_key


def test_content_key_ignores_key_order_and_whitespace_of_the_encoding():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_content_key_changes_with_any_value():
    assert content_key({"a": 1}) != content_key({"a": 2})
    assert content_key([1, 2]) != content_key([2, 1])
    assert len(content_key("x")) == 32


def test_bytes_inside_values_are_keyed_by_their_own_digest():
    digest = bytes_key(b"\x89PNG...")
    assert content_key({"image": b"\x89PNG..."}) == content_key({"image": {"__bytes_xxh3_128__": digest}})


def test_non_finite_numbers_are_refused():
    with pytest.raises(ValueError):
        content_key({"x": math.nan})


def test_normalized_text_folds_case_width_and_whitespace():
    assert normalize_text("  Ｈｅｌｌｏ\t  WORLD\n") == "hello world"
    assert text_key("Hello   world") == text_key("hello world")
    assert text_key("hello world") != text_key("hello worlds")


def test_a_render_without_a_source_keeps_the_key_it_had_before_edits_existed():
    from seir.operators.backends.base import RenderRequest

    # A run gives every request the job's guidance, or its image family's (7.5 for the Stable Diffusion it had then).
    plain = RenderRequest("a red fox", seed=7, width=64, height=64, steps=2, guidance_scale=7.5)
    before = {"prompt": "a red fox", "seed": 7, "width": 64, "height": 64, "steps": 2, "guidance_scale": 7.5,
              "negative_prompt": ""}  # every field a render request had before edits
    assert content_key(plain) == content_key(before)
    edit = RenderRequest("a red fox", seed=7, width=64, height=64, steps=2, guidance_scale=7.5, source=b"\x89PNG...",
                         strength=0.6)
    assert content_key(edit) == content_key({**before, "source": {"__bytes_xxh3_128__": bytes_key(b"\x89PNG...")},
                                             "strength": 0.6})
