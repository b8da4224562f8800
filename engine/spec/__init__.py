"""The job spec: what a job may say (job.py), its dedup section (dedup.py), the checks against what its operators
declare (declared.py), reading it from YAML with errors that name the file, line and key (load.py), and what its
requests ask of each chat role's context window (windows.py, read from the models' configs and tokenizers).

Uses: the operators' declarations and the engine's keys, records and errors; nothing that runs, stores or loads a
model. Everything else in the engine reads a ``JobSpec``.
"""

from seir.engine.spec.declared import job_summary, role_needs
from seir.engine.spec.dedup import METHODS as DEDUP_METHODS
from seir.engine.spec.dedup import DedupConfig
from seir.engine.spec.job import MAX_TURNS, JobSpec, JobSpecError, RoleSpec, SeedSpec, SeirSpec
from seir.engine.spec.load import load_job
from seir.engine.spec.windows import stage_prompts, window_report

__all__ = ["DEDUP_METHODS", "MAX_TURNS", "DedupConfig", "JobSpec", "JobSpecError", "RoleSpec", "SeedSpec", "SeirSpec",
           "job_summary", "load_job", "role_needs", "stage_prompts", "window_report"]
