"""A cap on what one command may spend (model calls, tokens, GPU hours), what it spent, and what the rest costs.

Spend counts computed calls only (an answer from the cache costs nothing). The runner starts a shard only while the
spend is under every cap, so a capped run stops at a shard boundary: shards already in flight finish and commit,
which may take the spend past the cap by up to ``shards_in_flight - 1`` shards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from seir.engine.records import Ledger
from seir.engine.spec import JobSpec


@dataclass(frozen=True)
class Budget:
    calls: int | None = None
    tokens: int | None = None
    gpu_hours: float | None = None
    accepted: int | None = None  # a target, not a cap: stop once this many dialogues are accepted after dedup

    @classmethod
    def of(cls, spec: JobSpec, calls: int | None = None, tokens: int | None = None,
           gpu_hours: float | None = None, accepted: int | None = None) -> Budget:
        """The job's ``execution.budget`` and ``execution.target_accepted``, with the command line's in place of
        the job's where given."""
        job = spec.execution.budget
        return cls(calls if calls is not None else job.calls, tokens if tokens is not None else job.tokens,
                   gpu_hours if gpu_hours is not None else job.gpu_hours,
                   accepted if accepted is not None else spec.execution.target_accepted)

    def any(self) -> bool:
        return any(cap is not None for cap in (self.calls, self.tokens, self.gpu_hours))


@dataclass
class Spend:
    calls: int = 0
    tokens: int = 0
    gpu_s: float = 0.0
    dialogues: int = 0  # made by this command, for the rate of what is left
    _batches: set[str] = field(default_factory=set)

    def add(self, ledger: Ledger, dialogues: int, num_gpus: Mapping[str, float]) -> None:
        for call in ledger.calls:
            if call.cached:
                continue
            self.calls += 1
            self.tokens += call.tokens_in + call.tokens_out
            if call.batch_id not in self._batches:  # a batch's latency is its actor's busy time, once
                self._batches.add(call.batch_id)
                self.gpu_s += call.latency_ms / 1000 * num_gpus.get(call.role, 0.0)
        self.dialogues += dialogues

    def over(self, budget: Budget) -> str | None:
        """Which cap is reached, as a phrase, or None."""
        if budget.calls is not None and self.calls >= budget.calls:
            return f"calls {self.calls} of {budget.calls}"
        if budget.tokens is not None and self.tokens >= budget.tokens:
            return f"tokens {self.tokens} of {budget.tokens}"
        if budget.gpu_hours is not None and self.gpu_s / 3600 >= budget.gpu_hours:
            return f"GPU hours {self.gpu_s / 3600:.3f} of {budget.gpu_hours}"
        return None

    def rest(self, dialogues_left: int) -> str:
        """What ``dialogues_left`` more dialogues would cost at this command's rate."""
        if not self.dialogues:
            return "unknown (no dialogue finished yet)"
        scale = dialogues_left / self.dialogues
        return (f"about {self.calls * scale:.0f} calls, {self.tokens * scale:.0f} tokens, "
                f"{self.gpu_s * scale / 3600:.3f} GPU hours")
