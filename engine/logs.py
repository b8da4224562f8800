"""Where chatter goes: the terminal shows seir's own lines and real errors; model-loading bars, library warnings
(transformers, diffusers, torch) and what model workers print go to ``OUT/logs/seir.log``. ``--verbose`` shows
everything on the terminal instead."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_FILE = Path("logs") / "seir.log"


def log_path(out_dir: Path) -> Path:
    return Path(out_dir) / LOG_FILE


class _LogFile(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        """A record that cannot be written (a full disk) is dropped without the traceback logging would print: the
        run's own next write stops it with one line that says what happened."""


@contextmanager
def quiet(out_dir: Path, verbose: bool) -> Iterator[Path | None]:
    """Python warnings and library log records of this process into the output's log file (the path, or None
    when ``verbose``). Errors seir reports itself are not log records: they still reach the terminal."""
    if verbose:
        yield None
        return
    path = log_path(out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _LogFile(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    # Ray's driver-side logger prints to the terminal through handlers of its own (not the root's): its notices go
    # to the log too, and only its errors stay on the terminal.
    ray_logger = logging.getLogger("ray")
    ray_handlers = list(ray_logger.handlers)
    errors = logging.StreamHandler()
    errors.setLevel(logging.ERROR)
    ray_logger.handlers = [handler, errors]
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        ray_logger.handlers = ray_handlers
        root.removeHandler(handler)
        handler.close()


def redirect_worker_output(path: str | None) -> None:
    """In a model worker: its standard output and error, C level included (progress bars, warnings, prints),
    appended to the output's log. Skipped where the folder is not on this machine (a remote cluster node): there
    Ray keeps the worker's logs, and none reach the driver's terminal."""
    if path is None or not Path(path).parent.is_dir():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    os.close(handle)
