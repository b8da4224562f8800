"""Schema v4 on an output written before it: seeds get their images per turn, and the images every earlier call saw
are read out of its stored request into ``call_images``."""

from __future__ import annotations

import json

import duckdb

from seir.engine.keys import bytes_key
from seir.engine.run.clients import image_keys_in, plain
from seir.engine.store import ProvenanceStore
from seir.engine.store.schema import SCHEMA_V1
from seir.operators.backends.base import ChatRequest


def test_an_older_database_gains_turn_images_and_call_images(tmp_path) -> None:
    first, second = b"first picture", b"second picture"
    request = ChatRequest([{"role": "user", "content": [{"type": "image", "image": first},
                                                        {"type": "image", "image": second},
                                                        {"type": "text", "text": "Which is older?"}]}])
    stored = plain(request)
    assert image_keys_in(stored) == [bytes_key(first), bytes_key(second)]
    with duckdb.connect(str(tmp_path / ProvenanceStore.FILENAME)) as con:
        con.execute(SCHEMA_V1)
        con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        con.execute("INSERT INTO seeds (seed_key, seed_id, images) VALUES ('s1', 'photo', ['k1', 'k2']), "
                    "('s2', 'text', [])")
        con.execute("INSERT INTO call_outputs VALUES ('c1', ?, '{}'), ('c2', ?, '{}')",
                    [json.dumps(stored), json.dumps(plain(ChatRequest([{"role": "user", "content": "hi"}])))])
    with ProvenanceStore(tmp_path) as store:
        assert store.con.execute("SELECT seed_id, turn_images FROM seeds ORDER BY 1").fetchall() == [
            ("photo", [["k1", "k2"]]), ("text", [])]
        assert store.con.execute("SELECT call_key, position, image_key FROM call_images ORDER BY ALL").fetchall() == [
            ("c1", 0, bytes_key(first)), ("c1", 1, bytes_key(second))]
