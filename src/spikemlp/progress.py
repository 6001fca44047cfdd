"""Progress of a long loop: tqdm's bar on a terminal, plain lines elsewhere.

Output sent to a file or a pipe (``spikemlp train ... > log.txt``) gets a line each time another
``STEP_PERCENT`` of the work is done, not a bar redrawn with carriage returns, so that a log stays a few
hundred lines long and reads as text.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

STEP_PERCENT = 5


class LineProgress:
    """The part of tqdm's interface that spikemlp uses, printing a line every ``STEP_PERCENT`` percent."""

    def __init__(self, total: int | None, initial: int = 0, desc: str = "", unit: str = "batch", file=None):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.file = file or sys.stderr
        self.postfix, self.start, self.printed = "", time.monotonic(), self._percent() // STEP_PERCENT

    def _percent(self) -> int:
        return 100 * self.n // self.total if self.total else 0

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._percent() // STEP_PERCENT > self.printed:  # another multiple of STEP_PERCENT reached
            self.printed = self._percent() // STEP_PERCENT
            self._line()

    def _line(self) -> None:
        done = (
            f"{self._percent()}% ({self.n}/{self.total} {self.unit})"
            if self.total
            else f"{self.n} {self.unit}"
        )
        post = f"  {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done}  {time.monotonic() - self.start:.0f} s{post}", file=self.file, flush=True)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in {**(ordered_dict or {}), **values}.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def close(self) -> None:
        if not self.total:
            self._line()  # no percentages to mark: one line at the end


def bar(total: int | None, desc: str, initial: int = 0, unit: str = "batch", file=None):
    """A progress display for ``total`` units on ``file`` (stderr): tqdm on a terminal, else lines."""
    file = file or sys.stderr
    if getattr(file, "isatty", lambda: False)():
        from tqdm import tqdm

        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            dynamic_ncols=True,
            leave=False,
            file=file,
            mininterval=1.0,
        )
    return LineProgress(total, initial, desc, unit, file)


def wrap(items: Iterable, desc: str, enabled: bool = True, total: int | None = None) -> Iterator:
    """``items`` as they come, with a progress display of one unit per item when ``enabled``."""
    if not enabled:
        yield from items
        return
    shown = bar(total if total is not None else (len(items) if hasattr(items, "__len__") else None), desc)
    try:
        for item in items:
            yield item
            shown.update(1)
    finally:
        shown.close()
