"""How far a long command has got, on stderr: a bar redrawn in place on a terminal,
plain lines every few seconds otherwise (a log file, a CI job, `kubectl logs`).

A small class of our own rather than a library: one bar with a few counters is all the
commands need, and it keeps the runtime image free of a terminal-rendering dependency.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from typing import TextIO

_REDRAW_S = 0.1  # at most ten redraws a second
_BAR_CELLS = 30
_MIN_BAR_CELLS = 10
_BAR_FRAME = len("100% || ")
_CLEAR_TO_END = "\x1b[K"


class Progress:
    """Shows `done` of `total` units with named counters, a rate and an ETA.

    `every_s` None draws the bar (for a terminal); a number prints a plain line that
    often. `clock` is for tests.
    """

    def __init__(
        self,
        stream: TextIO,
        total: int,
        *,
        label: str,
        unit: str,
        every_s: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._total = total
        self._label = label
        self._unit = unit
        self._every_s = every_s
        self._clock = clock
        self._began = clock()
        self._shown_at = float("-inf")
        self._shown: tuple[int, tuple[tuple[str, int], ...]] | None = None
        self._drawn = False

    def show(self, done: int, counters: Sequence[tuple[str, int]], *, now: bool = False) -> None:
        """Report `done` units and `counters` (name, value), when it is time to (`now`:
        whatever the time)."""
        at = self._clock()
        interval = _REDRAW_S if self._every_s is None else self._every_s
        state = (done, tuple(counters))
        if state == self._shown or (not now and at - self._shown_at < interval):
            return
        self._shown_at, self._shown = at, state
        if self._every_s is None:
            width = shutil.get_terminal_size().columns - 1
            self._stream.write("\r" + self.bar(done, counters, at, width) + _CLEAR_TO_END)
            self._drawn = True
        else:
            self._stream.write(self.line(done, counters, at) + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Clear the bar, so what follows starts on a clean line."""
        if self._drawn:
            self._stream.write("\r" + _CLEAR_TO_END)
            self._stream.flush()
            self._drawn = False

    def bar(self, done: int, counters: Sequence[tuple[str, int]], at: float, width: int) -> str:
        """The terminal form, at most `width` characters, the bar taking what the text
        leaves (the rate goes first when the terminal is narrow):
        `42% |#####     | 4,200/10,000  ETA 0:05  2,000/s  800 chosen ...`."""
        share = done / self._total if self._total else 1.0
        rate, eta = self._pace(done, at)
        counted = [f"{value:,} {name}" for name, value in counters]
        text = "  ".join([f"{done:,}/{self._total:,}", eta, rate, *counted])
        if len(text) + _BAR_FRAME + _MIN_BAR_CELLS > width:
            text = "  ".join([f"{done:,}/{self._total:,}", eta, *counted])
        cells = max(_MIN_BAR_CELLS, min(_BAR_CELLS, width - len(text) - _BAR_FRAME))
        filled = round(share * cells)
        return f"{share:4.0%} |{'#' * filled}{' ' * (cells - filled)}| {text}"[:width]

    def line(self, done: int, counters: Sequence[tuple[str, int]], at: float) -> str:
        """The plain form: `label: 4,200 of 10,000 ... (42%), ...`."""
        share = done / self._total if self._total else 1.0
        parts = [
            f"{self._label}: {done:,} of {self._total:,} {self._unit} ({share:.0%})",
            *(f"{value:,} {name}" for name, value in counters),
            *self._pace(done, at),
        ]
        return ", ".join(parts)

    def _pace(self, done: int, at: float) -> list[str]:
        elapsed = at - self._began
        rate = done / elapsed if elapsed > 0 else 0.0
        left = max(0, self._total - done)
        eta = _duration(left / rate) if rate > 0 else "--:--"
        return [f"{rate:,.0f}/s", f"ETA {eta}"]


def _duration(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
