"""Progress on long work: a bar on a terminal, a line every few seconds off one, nothing when quiet."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
LINE_SECONDS = 10.0  # off a terminal (a log file, CI), a progress line at most this often


def progress_bar(iterable: Iterable[T], enabled: bool = True, **options) -> Iterable[T]:
    """`tqdm(iterable)` when `enabled` and stderr is a terminal; off a terminal, `ProgressLines`;
    the iterable as it is when not `enabled` or `--quiet`."""
    if not enabled or quiet:
        return iterable
    if sys.stderr.isatty():
        return tqdm(iterable, **options)
    return ProgressLines(iterable, options.get("desc", "working"), options.get("total"), options.get("unit", "it"))


class ProgressLines:
    """An iterable that prints one line every `LINE_SECONDS` while it is gone through: how far,
    how fast, and the time left when the total is known. `disable` is True, as tqdm's is when it
    shows nothing, so callers do not feed it a bar's extras."""

    disable = True

    def __init__(self, iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it"):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)

    def __len__(self) -> int:
        return len(self.iterable)

    def __iter__(self) -> Iterator[T]:
        started = last = time.perf_counter()
        for done, item in enumerate(self.iterable, start=1):
            yield item
            now = time.perf_counter()
            if now - last >= LINE_SECONDS:
                last = now
                print(f"devise: {self.desc}: {progress_text(done, self.total, now - started, self.unit)}", flush=True)


def progress_text(done: int, total: int | None, seconds: float, unit: str) -> str:
    """'1,200/9,000 batch, 31 s, 38.7 batch/s, about 3 min 21 s left'."""
    rate = done / seconds if seconds > 0 else 0.0
    text = f"{done:,}" + (f"/{total:,}" if total else "") + f" {unit}, {duration(seconds)}, {rate:.1f} {unit}/s"
    if total and rate > 0:
        text += f", about {duration((total - done) / rate)} left"
    return text


def duration(seconds: float) -> str:
    """'45 s', '3 min 21 s', '1 h 05 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# The command line's --quiet, for the lines of work found deep inside a command (encoding a long
# vocabulary) that no caller's `progress` reaches.
quiet = False


def stage(text: str, enabled: bool = True) -> None:
    """One line saying what a long command does now, flushed at once: a log file or CI, where
    progress bars stay silent, still shows where a run is."""
    if enabled and not quiet:
        print(f"devise: {text}", flush=True)
