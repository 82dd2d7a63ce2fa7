"""Progress bars that stay quiet when asked to, and when output is not a terminal."""

from __future__ import annotations

from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_bar(iterable: Iterable[T], enabled: bool = True, **options) -> Iterable[T]:
    """`tqdm(iterable)` when `enabled` and stderr is a terminal, else the iterable as it is."""
    return tqdm(iterable, disable=None if enabled else True, **options)


# The command line's --quiet, for the lines of work found deep inside a command (encoding a long
# vocabulary) that no caller's `progress` reaches.
quiet = False


def stage(text: str, enabled: bool = True) -> None:
    """One line saying what a long command does now, flushed at once: a log file or CI, where
    progress bars stay silent, still shows where a run is."""
    if enabled and not quiet:
        print(f"devise: {text}", flush=True)
