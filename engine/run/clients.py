"""Model clients: the call cache and call recording between the SEIR loop and the actor pools.

Every request gets a content key (backend config + method + request, images by their keys). A key already answered
in the output's provenance store is read back instead of recomputed; the rest go to the pool as one batch. Every
request, cached or not, is recorded as a ``ModelCall`` in the shard's ledger, which the committer writes with the
shard.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Protocol

from seir.engine.errors import SeirError
from seir.engine.keys import BYTES_REFERENCE, canonical_json, content_key
from seir.engine.records import Ledger, ModelCall, StoredImage
from seir.engine.run.pools import CallFailure, RolePool
from seir.engine.store import ImageStore, SharedCallCache
from seir.operators.backends.base import (
    ChatRequest,
    ChatResult,
    RenderRequest,
    ScoreRequest,
    ScoreResult,
    SimilarityRequest,
    SimilarityResult,
)


class CallCache(Protocol):
    def answered(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Outputs of earlier successful calls with these keys."""
        ...


class LayeredCache:
    """The output's own answers first, then a shared cache's (``--cache``); images of renders answered by the shared
    cache are copied into the output, so everything the output references lives in it."""

    def __init__(self, own: CallCache, shared: SharedCallCache | None, images: ImageStore) -> None:
        self.own, self.shared, self.images = own, shared, images

    def answered(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        found = self.own.answered(keys)
        missing = [key for key in keys if key not in found]
        if self.shared is not None and missing:
            from_shared = self.shared.answered(missing)
            for output in from_shared.values():
                if "image_key" in output:
                    self.shared.copy_image(output["image_key"], from_store=self.shared.images, into=self.images)
            found.update(from_shared)
        return found


def _fields(result: Any) -> dict[str, Any]:
    """A result's fields as stored in the call cache (its own call key is the cache's key, not a field)."""
    fields = asdict(result)
    fields.pop("call_key", None)
    return fields


def _stop_on_repeated_failure(role: str, results: list[Any]) -> None:
    """A whole batch failed with one error the backend says would repeat (a refusal, or retries spent on a server
    that is down): the rest of the run would fail the same way, so stop it now with that error rather than reject
    every dialogue quietly. Shards committed so far stay; the same command resumes."""
    reasons = {r.reason for r in results if isinstance(r, CallFailure) and r.stops_run}
    if len(reasons) == 1 and all(isinstance(r, CallFailure) for r in results):
        raise SeirError(f"stopped: every request of a batch of {len(results)} failed the same way, so every dialogue "
                        f"would be rejected. {reasons.pop()}. Fix the {role} role (or its server) and run the same "
                        f"command again: committed shards are kept.")


class RoleHealth:
    """The calls a run has made per role and how many failed: a role whose every call has failed so far cannot be
    working (a model its backend cannot batch, a server that refuses every request), and a run that went on would
    reject every dialogue and still report success."""

    def __init__(self) -> None:
        self.made: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.first_error: dict[str, str] = {}

    def add(self, ledger: Ledger) -> None:
        for call in ledger.calls:
            if call.output.get("request_only"):  # too long for the window: says nothing of the role
                continue
            self.made[call.role] = self.made.get(call.role, 0) + 1
            if "error" in call.output:
                self.failed[call.role] = self.failed.get(call.role, 0) + 1
                self.first_error.setdefault(call.role, str(call.output["error"]))

    def stop_if_broken(self) -> None:
        """Stop the run, keeping what is committed, when some role has failed every call it was given."""
        for role, made in self.made.items():
            if made and self.failed.get(role, 0) == made:
                raise SeirError(f"stopped: every one of the {made} {role} calls so far failed, so every dialogue would "
                                f"be rejected. The first: {self.first_error[role][:300]}. Fix the {role} role (its "
                                f"model, backend or batch_size) and run the same command again: committed shards are "
                                "kept.")


def _failed(failure: CallFailure) -> dict[str, Any]:
    """A failed call's output in the ledger: its reason, and whether the fault was the request's own."""
    return {"error": failure.reason, **({"request_only": True} if failure.request_only else {})}


def plain(value: Any) -> Any:
    """JSON-ready form of a request or result; image bytes become references to their content key."""
    return json.loads(canonical_json(value))


def image_keys_in(value: Any) -> list[str]:
    """The content keys of the images a ``plain`` request holds, in the order they appear."""
    if isinstance(value, dict):
        if BYTES_REFERENCE in value:
            return [value[BYTES_REFERENCE]]
        return [key for item in value.values() for key in image_keys_in(item)]
    if isinstance(value, list):
        return [key for item in value for key in image_keys_in(item)]
    return []


class ModelClient:
    def __init__(self, role: str, pool: RolePool, backend_config: dict[str, Any], cache: CallCache,
                 images: ImageStore) -> None:
        self.role = role
        self.pool = pool
        self.window = pool.window  # requests to this role are fitted to it before they are keyed
        self.backend_config = backend_config
        self.model_id = str(backend_config.get("model", ""))
        self.revision = str(backend_config.get("revision", ""))
        self.cache = cache
        self.images = images

    async def chat(self, requests: list[ChatRequest], ledger: Ledger) -> list[ChatResult | CallFailure]:
        return await self._call("chat", requests, ledger, _fields, lambda out: ChatResult(**out))

    async def score(self, requests: list[ScoreRequest], ledger: Ledger) -> list[ScoreResult | CallFailure]:
        return await self._call("score", requests, ledger, _fields, lambda out: ScoreResult(**out))

    async def similarity(self, requests: list[SimilarityRequest],
                         ledger: Ledger) -> list[SimilarityResult | CallFailure]:
        return await self._call("similarity", requests, ledger, _fields, lambda out: SimilarityResult(**out))

    async def embed(self, texts: list[str], ledger: Ledger) -> list[list[float] | CallFailure]:
        return await self._call("embed", texts, ledger, lambda vector: {"vector": list(vector)},
                                lambda out: out["vector"])

    async def render(self, requests: list[RenderRequest], ledger: Ledger) -> list[StoredImage | CallFailure]:
        def store(result: Any) -> dict[str, Any]:
            key = self.images.put(result.png)
            ledger.images[key] = StoredImage(key, result.png, result.width, result.height)
            return {"image_key": key, "width": result.width, "height": result.height}

        def load(out: dict[str, Any]) -> StoredImage:
            # Recorded in the ledger even when cached: an image a shared cache answered is new to this output.
            key = out["image_key"]
            if key not in ledger.images:
                ledger.images[key] = StoredImage(key, self.images.get(key), out["width"], out["height"])
            return ledger.images[key]

        return await self._call("render", requests, ledger, store, load)

    def call_key(self, method: str, request: Any) -> str:
        return content_key({"backend": self.backend_config, "method": method, "request": request})

    async def _call(self, method: str, requests: list[Any], ledger: Ledger, encode: Any, decode: Any) -> list[Any]:
        """Results in request order, each stamped with its call key (failures too)."""
        keyed = [(self.call_key(method, r), r) for r in requests]
        answered = self.cache.answered([key for key, _ in keyed])
        misses = [(key, request) for key, request in keyed if key not in answered]
        fresh: dict[str, Any] = {}
        if misses:
            results, chunks = await self.pool.call(method, [request for _, request in misses])
            _stop_on_repeated_failure(self.role, results)
            chunk_of = [stats for stats in chunks for _ in range(stats.size)]
            for (key, request), result, stats in zip(misses, results, chunk_of, strict=True):
                output = _failed(result) if isinstance(result, CallFailure) else encode(result)
                fresh[key] = result if isinstance(result, CallFailure) else output
                ledger.calls.append(self._record(key, method, request, output, stats.latency_s * 1000,
                                                 stats.batch_id, stats.size, cached=False))
        outcomes = []
        for key, request in keyed:
            if key in answered:
                ledger.calls.append(self._record(key, method, request, answered[key], 0.0, "", 0, cached=True))
                outcome = decode(answered[key])
            else:
                value = fresh[key]
                outcome = value if isinstance(value, CallFailure) else decode(value)
            if hasattr(outcome, "call_key"):
                outcome.call_key = key
            outcomes.append(outcome)
        return outcomes

    def _record(self, key: str, method: str, request: Any, output: dict[str, Any], latency_ms: float,
                batch_id: str, batch_size: int, cached: bool) -> ModelCall:
        request = plain(request)
        return ModelCall(
            call_key=key, role=self.role, method=method, model_id=self.model_id, revision=self.revision,
            request=request, output=output, image_keys=image_keys_in(request),
            tokens_in=int(output.get("tokens_in", 0)), tokens_out=int(output.get("tokens_out", 0)),
            latency_ms=latency_ms, batch_id=batch_id, batch_size=batch_size, cached=cached,
        )
