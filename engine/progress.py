"""Progress while a command works: counts, rate and ETA.

``Meter`` is the one way a long step shows how far it is: a bar redrawn in place on a terminal, plain lines in a
log, a pipe or a Ray job's output (at least one every ``every_s``, whether or not anything advanced, so a slow model
never looks like a hang). ``say`` prints a line of seir's own without tearing a bar that is on the same stream.
"""

from __future__ import annotations

import math
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

T = TypeVar("T")
R = TypeVar("R")
PLAIN_EVERY_S = 10.0  # a line at least this often where no bar can be drawn
BAR_EVERY_S = 0.5
_printing = threading.Lock()
STEP_ATTRIBUTE = "seir_step"  # on an exception: the label of the innermost Meter it left
_bars: dict[int, Meter] = {}  # the bar drawn on each stream, by id(stream)


def say(stream: TextIO, message: str) -> None:
    """``[seir] message`` on its own line; a bar on the stream is cleared first and drawn again below it."""
    with _printing:
        bar = _bars.get(id(stream))
        if bar is not None:
            stream.write("\r\x1b[K")
        print(f"[seir] {message}", file=stream, flush=True)
        if bar is not None:
            bar.draw()


def _amount(value: float) -> str:
    """A count as is; a measure (megabytes read) to one decimal."""
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Meter:
    """How far one long step is: ``done`` of ``total`` ``unit``, the rate and the time left at that rate.

    Use as a context manager: it shows itself when entered, on every ``advance`` (a terminal at most every
    ``BAR_EVERY_S``, elsewhere at most every ``every_s``), from a timer while nothing advances, and once at the end.
    ``detail`` adds what the step is doing now to every line."""

    def __init__(self, label: str, total: float | None, unit: str, stream: TextIO = sys.stderr,
                 detail: Callable[[], str] | None = None, every_s: float = PLAIN_EVERY_S,
                 tty: bool | None = None) -> None:
        self.label, self.total, self.unit, self.stream = label, total, unit, stream
        self.detail = detail or (lambda: "")
        self.every_s = every_s
        self.tty = _isatty(stream) if tty is None else tty
        self.done = 0
        self.started = time.monotonic()
        self._shown = -math.inf
        self._said_done = -1  # the count the last plain line showed: the closing line is not said twice
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def __enter__(self) -> Meter:
        self.started = time.monotonic()
        if self.tty:
            _bars[id(self.stream)] = self
        self.show(force=True)
        self._timer = threading.Thread(target=self._tick, name=f"seir-meter-{self.label}", daemon=True)
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if isinstance(exc[1], BaseException) and not hasattr(exc[1], STEP_ATTRIBUTE):
            setattr(exc[1], STEP_ATTRIBUTE, self.label)  # the innermost step an error left, for its message
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        with _printing:
            if _bars.get(id(self.stream)) is self:
                del _bars[id(self.stream)]
                self.stream.write("\r\x1b[K")
            elif self._said_done == self.done:
                return
            print(f"[seir] {self.line()}", file=self.stream, flush=True)

    def advance(self, n: float = 1) -> None:
        self.done += n
        self.show()

    def counted(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, advancing by one as each is taken."""
        for item in items:
            yield item
            self.advance()

    def counted_call(self, step: Callable[..., R], *args: Any) -> R:
        """``step(*args)``, then one more done."""
        result = step(*args)
        self.advance()
        return result

    def show(self, force: bool = False) -> None:
        if force or time.monotonic() - self._shown >= (BAR_EVERY_S if self.tty else self.every_s):
            if self.tty:
                with _printing:
                    self.draw()
            else:
                say(self.stream, self.line())
                self._said_done = self.done
            self._shown = time.monotonic()

    def draw(self) -> None:
        """The bar, redrawn in place (callers hold ``_printing``)."""
        width = shutil.get_terminal_size((120, 20)).columns
        filled = int(20 * self.done / self.total) if self.total else 0
        text = f"[seir] [{'#' * filled}{'.' * (20 - filled)}] {self.line()}"
        self.stream.write("\r\x1b[K" + text[: width - 1])
        self.stream.flush()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        detail = self.detail()
        if self.total is None:  # counted as found (the end shows itself): no share, no ETA
            counted, eta = f"{_amount(self.done)} {self.unit}", ""
        else:
            left = (self.total - self.done) / rate if rate > 0 else None
            percent = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            counted = f"{_amount(self.done)}/{_amount(self.total)} {self.unit}{percent}"
            eta = f"ETA {duration(left) if self.done < self.total else '0s'} | "
        return (f"{self.label} {counted} | {rate * 60:.1f} {self.unit}/min | {eta}elapsed {duration(elapsed)}"
                + (f" | {detail}" if detail else ""))

    def _tick(self) -> None:
        while not self._stop.wait(min(BAR_EVERY_S, self.every_s / 4)):
            self.show()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def failed_step(err: BaseException) -> str | None:
    """The long step (a Meter's label) ``err`` was raised in, if it left one."""
    return getattr(err, STEP_ATTRIBUTE, None)
