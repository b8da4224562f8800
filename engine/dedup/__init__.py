"""The global dedup pass: the index that finds duplicates across every shard and run, its tables in DuckDB
(index.py), and the pass over an output's accepted dialogues that records one decision per dropped dialogue
(accepted.py). Which methods run is the job's ``dedup`` section (seir.engine.spec.dedup); the methods themselves
are operators (seir.operators.dedup).

Uses: the job spec, the store (to read candidates and record decisions) and the operators' dedup methods.
"""

from seir.engine.dedup.accepted import dedup_accepted
from seir.engine.dedup.index import DedupIndex, DedupItem, DedupResult, find_duplicates

__all__ = ["DedupIndex", "DedupItem", "DedupResult", "dedup_accepted", "find_duplicates"]
