"""Keep the memory a training step frees for the next step, instead of handing it back to the OS.

glibc serves every allocation over 32 MB (most activations of a batch of 256 images) with a
fresh `mmap` and unmaps it on `free`, so each step faults in, and the kernel zeroes, gigabytes
of new pages: about 500,000 page faults per step of the default CNN at 64 px. With `mmap`
and trimming switched off, freed blocks stay in the heap and the next step reuses them, which
`benchmarks/train_throughput.py` measures (docs/performance.md). Only glibc has these
switches (`mallopt`); on other systems the context manager changes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Iterator

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters, from glibc's malloc.h
GLIBC_DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_MAX: 65536}
KEEP = {M_TRIM_THRESHOLD: 2**31 - 1, M_MMAP_MAX: 0}  # never trim (up to 2 GiB), never mmap

_depth = 0  # nested `freed_memory_kept` blocks: only the outermost one switches


@functools.cache  # looked up once, not at every block
def glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (it has `gnu_get_libc_version` and `mallopt`), else None."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def set_malloc(settings: dict[int, int]) -> None:
    libc = glibc()
    if libc is not None:
        for parameter, value in settings.items():
            libc.mallopt(parameter, value)


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[None]:
    """Inside: freed memory stays in the process. After the outermost block: glibc's default
    values again (though glibc no longer adapts its mmap threshold once a program has set it), and
    what the heap holds unused goes back to the OS (`malloc_trim`)."""
    global _depth
    if _depth == 0:
        set_malloc(KEEP)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            set_malloc(GLIBC_DEFAULTS)
            libc = glibc()
            if libc is not None:
                libc.malloc_trim(0)
