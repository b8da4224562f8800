"""The call cache and the ledger: answers read back by call key, and every model call, its output and the images
it made written beside the rows that used them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from seir.engine.records import Ledger
from seir.engine.store.base import StoreBase, held, now


class CallRecords(StoreBase):
    @held
    def answered(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        if not keys:
            return {}
        rows = self.con.execute(
            "SELECT call_key, output FROM call_outputs WHERE call_key IN (SELECT unnest(?::VARCHAR[]))", [keys]
        ).fetchall()
        return {key: json.loads(output) for key, output in rows}

    @held
    def measured_rates(self) -> dict[str, tuple[float, float]]:
        """Per role, over every call this output computed: tokens (in and out) and busy seconds per call (a
        batch's latency shared among its requests)."""
        rows = self.con.execute(
            """SELECT role, avg(tokens_in + tokens_out), avg(latency_ms / greatest(batch_size, 1)) / 1000
               FROM model_calls WHERE NOT cached AND error IS NULL GROUP BY role""").fetchall()
        return {role: (float(tokens or 0), float(busy or 0)) for role, tokens, busy in rows}

    def commit_calls(self, run_id: str, ledger: Ledger, image_path: Any) -> None:
        """Calls made outside any shard (judge evaluation, dialogue embeddings)."""
        with self.transaction():
            self._insert_ledger(run_id, None, ledger, image_path, now())

    def _insert_ledger(self, run_id: str, shard_id: str | None, ledger: Ledger, image_path: Any,
                       stamp: datetime) -> None:
        calls = ledger.calls
        self._insert("model_calls", {
            "call_key": [c.call_key for c in calls], "run_id": [run_id] * len(calls),
            "shard_id": [shard_id] * len(calls), "role": [c.role for c in calls],
            "method": [c.method for c in calls], "model_id": [c.model_id for c in calls],
            "revision": [c.revision for c in calls], "tokens_in": [c.tokens_in for c in calls],
            "tokens_out": [c.tokens_out for c in calls], "latency_ms": [c.latency_ms for c in calls],
            "batch_id": [c.batch_id for c in calls], "batch_size": [c.batch_size for c in calls],
            "cached": [c.cached for c in calls], "error": [c.output.get("error") for c in calls],
            "created_at": [stamp] * len(calls),
        })
        # Cached answers too: one that a shared cache gave must stay answerable by this output alone.
        answered = {c.call_key: c for c in calls if "error" not in c.output}
        self._insert("call_outputs", {
            "call_key": list(answered), "request": [json.dumps(c.request) for c in answered.values()],
            "output": [json.dumps(c.output) for c in answered.values()],
        }, on_conflict_ignore=True)
        shown = [(c.call_key, position, key) for c in calls for position, key in enumerate(c.image_keys)]
        self._insert("call_images", {
            "call_key": [c for c, _, _ in shown], "position": [p for _, p, _ in shown],
            "image_key": [k for _, _, k in shown],
        }, on_conflict_ignore=True)
        images = list(ledger.images.values())
        self._insert("images", {
            "image_key": [i.key for i in images], "path": [image_path(i.key) for i in images],
            "width": [i.width for i in images], "height": [i.height for i in images],
            "bytes": [len(i.png) for i in images], "run_id": [run_id] * len(images),
        }, on_conflict_ignore=True)
