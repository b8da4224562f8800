"""The provenance store and everything an output folder keeps: the DuckDB file (``ProvenanceStore``, a facade over
one module per concern; schema and migrations in schema.py and connect.py), the acceptance rule decided from stored
scores (acceptance.py), the writer's lock (lock.py), content-addressed images (images.py), the call cache shared
between outputs (call_cache.py), dataset versions (versions.py) and people's verdicts (verdicts.py, verdict_files.py).

Uses: the engine's keys, records, errors and failpoints; nothing of the run, the dedup pass or the exports, which
all build on it.
"""

from seir.engine.store.acceptance import Decision, decide
from seir.engine.store.base import StoreError, limit_memory, memory_cap, now, pages
from seir.engine.store.call_cache import SharedCallCache
from seir.engine.store.connect import STORAGE_VERSION
from seir.engine.store.decisions import KeptTurn
from seir.engine.store.files import folder_whole, write_whole
from seir.engine.store.images import ImageStore, as_png
from seir.engine.store.integrity import DamagedStore, damaged, is_damage
from seir.engine.store.lock import OutputBusy, OutputLock
from seir.engine.store.provenance import ProvenanceStore, open_read_only
from seir.engine.store.runs import LATEST_CANDIDATES, output_stages, sql_text, stage_order_sql
from seir.engine.store.schema import (
    ACCEPTED_IN_RUN,
    SCHEMA_VERSION,
    candidate_preferences_sql,
    keep_score_sql,
    turn_scores_sql,
)
from seir.engine.store.snapshots import keep_snapshots
from seir.engine.store.verdicts import HumanVerdict, VerdictError, VerdictInbox
from seir.engine.store.versions import Version, version_name, write_version

__all__ = [
    "ACCEPTED_IN_RUN",
    "LATEST_CANDIDATES",
    "SCHEMA_VERSION",
    "STORAGE_VERSION",
    "DamagedStore",
    "Decision",
    "HumanVerdict",
    "ImageStore",
    "KeptTurn",
    "OutputBusy",
    "OutputLock",
    "ProvenanceStore",
    "SharedCallCache",
    "StoreError",
    "VerdictError",
    "VerdictInbox",
    "Version",
    "as_png",
    "candidate_preferences_sql",
    "damaged",
    "decide",
    "folder_whole",
    "is_damage",
    "keep_score_sql",
    "keep_snapshots",
    "limit_memory",
    "memory_cap",
    "now",
    "open_read_only",
    "output_stages",
    "pages",
    "sql_text",
    "stage_order_sql",
    "turn_scores_sql",
    "version_name",
    "write_version",
    "write_whole",
]
