"""Named points where a test may kill the process (``SEIR_FAILPOINT=name``), to prove that a run killed at any
moment resumes to the same result. Unset, a failpoint costs one environment lookup."""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("SEIR_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: what `kill -9` or a lost node leaves behind
