"""Logging and progress: modules log through `logging.getLogger(__name__)`; the command line sets
the format and the level (`configure`); long loops show a bar on a terminal and a line every few
seconds off one (`progress_bar`).

A library leaves handlers to its user: `import logging; logging.basicConfig(level=logging.INFO)`
shows devise's lines in a script. The command line prints them as `devise: ...` on stdout, and
warnings and errors on stderr.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
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
    formatter = logging.Formatter("devise: %(message)s")
    out, err = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def quiet_third_parties() -> None:
    """Libraries that would draw their own progress bars or notices into devise's output."""
    for name in ("transformers", "sentence_transformers", "huggingface_hub", "timm"):
        logging.getLogger(name).setLevel(logging.ERROR)


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
        started = last = time.perf_counter()
        for done, item in enumerate(self.iterable, start=1):
            yield item
            now = time.perf_counter()
            if now - last >= LINE_SECONDS:
                last = now
                log.info("%s: %s", self.desc, progress_text(done, self.total, now - started, self.unit))


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
