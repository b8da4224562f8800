"""Running a job: the runner (plan, start the model pools, run shards, commit, decide, dedup, write a version),
the SEIR loop over a shard (loop.py), the Ray actor pools (pools.py) and the model clients between them with the
call cache (clients.py), scoring inside the loop (scoring.py), planning and the refresh forecast (planning.py,
forecast.py), budgets (budget.py) and the run's progress and summary (summary.py).

The one package that starts Ray. Uses every room below it: spec, seeds, store, dedup and the report of export.
"""

from seir.engine.run.budget import Budget
from seir.engine.run.clients import ModelClient
from seir.engine.run.pools import CallFailure, RolePool
from seir.engine.run.runner import Runner

__all__ = ["Budget", "CallFailure", "ModelClient", "RolePool", "Runner"]
