"""Logging and progress: modules log through `logging.getLogger(__name__)`; the command line sets
the format and the level (`configure`); long loops show a bar on a terminal and a line every few
seconds off one (`progress_bar`).

A library leaves handlers to its user: `import logging; logging.basicConfig(level=logging.INFO)`
shows devise's lines in a script. The command line prints them as `devise: TIME ...` on stdout
(the time says when each stage and epoch ended, in a log file too), and warnings and errors as
`devise: ...` on stderr. Other libraries' progress bars stay out of both (`quiet_third_parties`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
LINE_SECONDS = 10.0  # off a terminal (a log file, CI), a progress line at most this often
log = logging.getLogger(__name__)
logging.getLogger("devise").addHandler(logging.NullHandler())


def configure(*, quiet: bool = False, verbose: bool = False) -> None:
    """The command line's logging: `devise: ...` lines, information on stdout and warnings on
    stderr; `quiet` keeps only warnings, `verbose` adds debugging lines."""
    root = logging.getLogger("devise")
    for handler in list(root.handlers):
        if not isinstance(handler, logging.NullHandler):
            root.removeHandler(handler)
    out, err = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    out.setFormatter(logging.Formatter("devise: %(asctime)s %(message)s", TIME_FORMAT))
    err.setLevel(logging.WARNING)
    err.setFormatter(logging.Formatter("devise: %(message)s"))
    for handler in (out, err):
        root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def quiet_third_parties() -> None:
    """Libraries that would draw their own progress bars or notices into devise's output (the
    Hugging Face hub's downloads, transformers' "Loading weights"): their loggers keep errors only
    and their bars are off, set before they are imported and again if they already are. A user's
    own HF_HUB_DISABLE_PROGRESS_BARS or TRANSFORMERS_VERBOSITY wins."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("transformers", "sentence_transformers", "huggingface_hub", "timm"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()


def progress_bar(iterable: Iterable[T], enabled: bool = True, **options) -> Iterable[T]:
    """`tqdm(iterable)` when `enabled`, devise logs information and stderr is a terminal; off a
    terminal, `ProgressLines`; the iterable as it is otherwise."""
    if not enabled or not logging.getLogger("devise").isEnabledFor(logging.INFO):
        return iterable
    if sys.stderr.isatty():
        return tqdm(iterable, **options)
    return ProgressLines(iterable, options.get("desc", "working"), options.get("total"), options.get("unit", "it"))


class ProgressLines:
    """An iterable that logs one line every `LINE_SECONDS` while it is gone through: how far, how
    fast, and the time left when the total is known. `disable` is True, as tqdm's is when it
    shows nothing, so callers do not feed it a bar's extras."""

    disable = True

    def __init__(self, iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it"):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)

    def __len__(self) -> int:
        return len(self.iterable)

    def __iter__(self) -> Iterator[T]:
        lines = ProgressLog(self.total, self.desc, self.unit)
        for item in self.iterable:
            yield item
            lines.update(1)


class ProgressLog:
    """Work told by counts as log lines: one every `LINE_SECONDS` (how far, how fast, the time left)."""

    def __init__(self, total: int | None, desc: str, unit: str = "it"):
        self.total, self.desc, self.unit, self.done = total, desc, unit, 0
        self.started = self.last = time.perf_counter()

    def update(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if now - self.last >= LINE_SECONDS:
            self.last = now
            log.info("%s: %s", self.desc, progress_text(self.done, self.total, now - self.started, self.unit))


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


class ProgressCount:
    """Progress told by counts rather than by an iterable (`update(n)` as work is done): a bar with
    the time left on a terminal, a line every `LINE_SECONDS` off one, nothing when `enabled` is
    False or devise logs no information; `close()` ends the bar."""

    def __init__(self, total: int, desc: str, unit: str = "it", enabled: bool = True):
        shown = enabled and logging.getLogger("devise").isEnabledFor(logging.INFO)
        self.bar = tqdm(total=total, desc=desc, unit=unit) if shown and sys.stderr.isatty() else None
        self.lines = ProgressLog(total, desc, unit) if shown and self.bar is None else None

    def update(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)
        elif self.lines is not None:
            self.lines.update(count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
