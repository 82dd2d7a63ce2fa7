"""Where decoded datasets are kept between runs, and when a cached copy is stale.

Decoding 110,000 JPEGs takes a while; a memory-mapped `.npy` copy loads in well under a second.
A cache entry is keyed by the source's path, size and modification time, so replacing the
source file makes a fresh entry instead of silently serving the old pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch


def default_cache_dir() -> Path:
    """`$DEVISE_CACHE`, else `$XDG_CACHE_HOME/devise`, else `~/.cache/devise`."""
    if os.environ.get("DEVISE_CACHE"):
        return Path(os.environ["DEVISE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "devise"


def source_fingerprint(*paths: Path) -> str:
    """A short hash of the paths' absolute names, sizes and modification times."""
    digest = hashlib.sha1()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def load_arrays(entry: Path) -> dict[str, torch.Tensor] | None:
    """The tensors of a complete cache entry (memory-mapped, copy-on-write), or None."""
    manifest = entry / "manifest.json"
    if not manifest.is_file():
        return None
    names = json.loads(manifest.read_text())["arrays"]
    return {name: torch.from_numpy(np.load(entry / f"{name}.npy", mmap_mode="c")) for name in names}


def save_arrays(entry: Path, arrays: dict[str, torch.Tensor], extra: dict) -> None:
    """Write arrays into a temporary folder, then rename it into place, so that a crash or a
    concurrent writer never leaves a half-written entry that looks complete."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=entry.name + ".tmp", dir=entry.parent))
    try:
        for name, tensor in arrays.items():
            np.save(tmp / f"{name}.npy", tensor.numpy())
        (tmp / "extra.json").write_text(json.dumps(extra))
        (tmp / "manifest.json").write_text(json.dumps({"arrays": list(arrays)}))
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def derived_array(entry: Path, name: str, make) -> torch.Tensor:
    """`entry/name.npy` memory-mapped, made by `make()` and saved (atomically) the first time.

    For arrays computed from a cache entry, such as its images resized to a training size:
    paying for the resize once instead of at every start."""
    path = entry / f"{name}.npy"
    if not path.is_file():
        fd, tmp = tempfile.mkstemp(prefix=name, suffix=".npy.tmp", dir=entry)
        try:
            with os.fdopen(fd, "wb") as file:
                np.save(file, make().numpy())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def load_extra(entry: Path) -> dict:
    return json.loads((entry / "extra.json").read_text())
