"""Kills an inference engine's process group once the role actor that started it is gone.

Started as ``python engine_guard.py <group> <actor pid>`` by a role actor (``engines.EngineServer``), beside the
engine it started in a process group of its own. Engines start processes of their own (vLLM's EngineCore and
workers) that a signal to the server alone leaves behind, still holding memory and the GPU, so it is the whole group
that goes. The actor stops and restarts its engine itself; what it cannot do is clean up after its own death: Ray
kills actors with SIGKILL, which no code in the actor can catch, and then kills the actor's direct children, which
would take a guard that is one of them and leave the engine's deeper processes running. So the guard detaches (its
own session, parented by init) and watches the actor's pid. It exits by itself once the group is gone. Standard
library only: it runs in seir's interpreter and never imports seir.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

POLL_S = 0.2


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped (signal 0 still reaches those)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def watch(group: int, actor: int) -> None:
    while True:
        try:
            os.killpg(group, 0)  # signal 0: is anything left in the group?
        except ProcessLookupError:
            return
        if not running(actor):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            return
        time.sleep(POLL_S)


def main(group: int, actor: int) -> None:
    if os.fork():  # the first process exits at once; the watcher is then init's child, out of Ray's reach
        return
    os.setsid()
    watch(group, actor)
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
