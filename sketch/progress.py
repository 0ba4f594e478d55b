"""A small text progress bar with a rate and an ETA, written to stderr (no tqdm dependency).

Contract: ``ProgressBar(total, label=...)`` counts work units (e.g. training steps over all
batches of directions). ``advance(units)`` records finished work, ``skip(units)`` records work
that needed no computing (shards found on resume): skipped units move the bar but are left out
of the rate, so the ETA reflects the real speed. The first ``advance`` is left out too: it
includes the one-off costs (lowering, tapes, kernel compilation), which would make the ETA of
a one-minute job read hours. ETA = remaining units / rate, rate = units computed after the
first advance / seconds since it; unknown (``?``) until a second advance. ``note`` (e.g.
:func:`compile_note`) is shown from the start until the first advance. On a terminal the bar
redraws in place (``\\r``) at most every ``min_interval`` seconds; elsewhere (logs, pipes) it
prints one line at most every ``log_interval`` seconds. ``close()`` prints the final state and
a newline.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..backends import kernels_cached

#: what the bar says while a first run on a machine compiles its kernels
COMPILING = "compiling kernels (first run on this machine)"


def compile_note(backend: str | None, *, series: bool, width: int | None = None) -> str | None:
    """:data:`COMPILING` if a run on ``backend`` (Taylor if ``series``, batch ``width``) will
    compile kernels first, else None."""
    return None if kernels_cached(backend, series=series, width=width) else COMPILING


def format_seconds(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour) for a duration in seconds; ``?`` if unknown."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """Counts ``total`` work units and draws ``label [####....] 45% 90/200 unit ETA 1:05``."""

    def __init__(self, total: int, *, label: str = "", unit: str = "steps",
                 stream: TextIO | None = None, enabled: bool = True, width: int = 24,
                 min_interval: float = 0.1, log_interval: float = 5.0,
                 note: str | None = None) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.done = 0
        self.computed = 0
        self._start = time.monotonic()
        self._last_draw = float("-inf")
        self._last_line = ""
        self._interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._interval = min_interval if self._interactive else log_interval
        self._closed = False
        self.note = note
        self._first: tuple[float, int] | None = None  # (time, computed) after the first advance
        if note:
            self._draw(force=True)

    def advance(self, units: int = 1) -> None:
        """Record ``units`` of computed work."""
        self.done += units
        self.computed += units
        if self._first is None:
            self._first = (time.monotonic(), self.computed)
            self.note = None
        self._draw()

    def skip(self, units: int) -> None:
        """Record ``units`` of work already done earlier (not counted in the rate)."""
        self.done += units
        self._draw()

    def eta_seconds(self) -> float:
        """Seconds left at the rate measured after the first advance (NaN until a second)."""
        if self._first is None:
            return float("nan")
        since, first_units = self._first
        elapsed, units = time.monotonic() - since, self.computed - first_units
        if units <= 0 or elapsed <= 0:
            return float("nan")
        return (self.total - self.done) * elapsed / units

    def line(self) -> str:
        fraction = self.done / self.total if self.total else 1.0
        filled = int(round(self.width * min(fraction, 1.0)))
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = format_seconds(time.monotonic() - self._start)
        state = (self.note if self.note else f"ETA {format_seconds(self.eta_seconds())}")
        return (f"{self.label} [{bar}] {100 * fraction:3.0f}% {self.done}/{self.total} {self.unit}"
                f" elapsed {elapsed} {state}").lstrip()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled or self._closed:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self._interval:
            return
        self._last_draw = now
        line = self.line()
        if self._interactive:
            # pad to the previous line: a shorter one (the note gone) must not leave its tail
            self.stream.write("\r" + line.ljust(len(self._last_line)))
        elif line != self._last_line:  # a log gets each state once
            self.stream.write(line + "\n")
        self._last_line = line
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and not self._closed:
            self._draw(force=True)
            if self._interactive:
                self.stream.write("\n")
            self.stream.flush()
        self._closed = True

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["COMPILING", "ProgressBar", "compile_note", "format_seconds"]
