"""Where decoded datasets are kept between runs, and when a cached copy is stale or damaged.

An entry is keyed by the source's path, size and modification time, and every file in it is
recorded with its size and CRC-32: a changed source makes a new entry, and a file missing, cut
short or changed is found when the entry is loaded and rebuilt with a one-line notice.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

from devise.errors import DeviseError

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """`$DEVISE_CACHE`, else `$XDG_CACHE_HOME/devise`, else `~/.cache/devise`."""
    if os.environ.get("DEVISE_CACHE"):
        return Path(os.environ["DEVISE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "devise"


def cache_folder(cache_dir: str | Path | None = None) -> Path:
    """The cache folder a setting names, else the default one."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def source_fingerprint(*paths: Path) -> str:
    """A short hash of the paths' absolute names, sizes and modification times."""
    digest = hashlib.sha1()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def notice(text: str) -> None:
    log.warning(text)


# ---------------------------------------------------------------------------------------------
# Sizes and checksums


def crc32_of(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return crc


def record(path: Path) -> dict:
    """What a file must still be: its size and CRC-32."""
    return {"bytes": path.stat().st_size, "crc32": crc32_of(path)}


@functools.lru_cache(maxsize=64)
def checksum_matches(path: str, size: int, mtime_ns: int, crc: int) -> bool:
    """The whole file read once per process (per size and date): a later load of the same file skips it."""
    return crc32_of(Path(path)) == crc


def damage(path: Path, recorded: dict) -> str | None:
    """Why `path` is not the file that was recorded, or None when it is."""
    if not path.is_file():
        return f"{path.name} is missing"
    stat = path.stat()
    if stat.st_size != recorded.get("bytes"):
        return f"{path.name} has {stat.st_size:,} bytes, not {recorded.get('bytes'):,}"
    if not checksum_matches(str(path), stat.st_size, stat.st_mtime_ns, recorded.get("crc32", -1)):
        return f"{path.name} does not match its checksum"
    return None


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Entries


def load_arrays(entry: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor] | None:
    """The tensors `names` of a complete, intact cache entry (memory-mapped, copy-on-write), or None
    when there is none; a damaged one, or one without all of `names`, is removed, with a notice, so
    that the caller builds it again."""
    manifest = entry / "manifest.json"
    if not manifest.is_file():
        return None
    content = read_json(manifest)
    problem = entry_damage(entry, content, names)
    if problem is None:
        try:
            return {name: torch.from_numpy(np.load(entry / f"{name}.npy", mmap_mode="c")) for name in content["arrays"]}
        except (OSError, ValueError) as error:
            problem = f"an array does not load ({error.__class__.__name__})"
    notice(f"the cache entry {entry} is damaged ({problem}): decoding the dataset again")
    shutil.rmtree(entry, ignore_errors=True)
    return None


def entry_damage(entry: Path, content, names: tuple[str, ...]) -> str | None:
    if isinstance(content, dict) and isinstance(content.get("arrays"), list):
        return "written by an earlier devise, without checksums"
    if not isinstance(content, dict) or not isinstance(content.get("arrays"), dict) or "extra" not in content:
        return "manifest.json is not one devise wrote"
    missing = [name for name in names if name not in content["arrays"]]
    if missing:
        return f"manifest.json lists no {missing[0]}"
    for name, recorded in [*content["arrays"].items(), ("extra", content["extra"])]:
        problem = damage(entry / (f"{name}.npy" if name != "extra" else "extra.json"), recorded)
        if problem:
            return problem
    return None


def save_arrays(entry: Path, arrays: dict[str, torch.Tensor], extra: dict) -> None:
    """Write arrays into a temporary folder, then rename it into place, so that a crash or a
    concurrent writer never leaves a half-written entry that looks complete."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=entry.name + ".tmp", dir=entry.parent))
    try:
        for name, tensor in arrays.items():
            np.save(tmp / f"{name}.npy", tensor.numpy())
        (tmp / "extra.json").write_text(json.dumps(extra))
        manifest = {"arrays": {name: record(tmp / f"{name}.npy") for name in arrays},
                    "extra": record(tmp / "extra.json")}
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def derived_array(entry: Path, name: str, make) -> torch.Tensor:
    """`entry/name.npy` memory-mapped, made by `make()` and saved (atomically, with its size and
    checksum in `name.json`) the first time, and made again if it was damaged since.

    For arrays computed from a cache entry, such as its images resized to a training size:
    paying for the resize once instead of at every start."""
    path, sidecar = entry / f"{name}.npy", entry / f"{name}.json"
    if path.is_file():
        recorded = read_json(sidecar)
        problem = damage(path, recorded) if isinstance(recorded, dict) else f"{sidecar.name} is missing or unreadable"
        if problem is None:
            try:
                return torch.from_numpy(np.load(path, mmap_mode="c"))
            except (OSError, ValueError) as error:
                problem = f"{path.name} does not load ({error.__class__.__name__})"
        notice(f"the cached array {path} is damaged ({problem}): making it again")
    fd, tmp = tempfile.mkstemp(prefix=name, suffix=".npy.tmp", dir=entry)
    try:
        with os.fdopen(fd, "wb") as file:
            np.save(file, make().numpy())
        recorded = record(Path(tmp))
        os.replace(tmp, path)
        sidecar.write_text(json.dumps(recorded))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def load_extra(entry: Path) -> dict:
    return json.loads((entry / "extra.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# What the cache holds, and removing it


CACHE_FOLDERS = ("features", "phrases", "downloads", "cifar100")  # the cache's own subfolders, besides its entries


def is_devise_entry(path: Path) -> bool:
    """A child of the cache folder that devise wrote: a decoded dataset (a folder with its
    manifest.json), one of devise's own subfolders, or a temporary folder a crash left behind."""
    if path.is_symlink() or not path.is_dir():
        return False
    return (path / "manifest.json").is_file() or path.name in CACHE_FOLDERS or ".tmp" in path.name


def size_of(path: Path) -> int:
    """Bytes of the files under `path`, links not followed."""
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(folder, name)).st_size for name in files)
    return total


def cache_entries(folder: Path) -> list[tuple[Path, int]]:
    """Every entry of devise's cache `folder` and its size in bytes, largest first.

    Refuses a folder holding anything devise does not write there: a `--cache-dir` or
    `$DEVISE_CACHE` pointing at the wrong folder then costs nothing."""
    if not folder.is_dir():
        return []
    children = sorted(folder.iterdir())
    foreign = [child.name for child in children if not is_devise_entry(child)]
    if foreign:
        raise DeviseError(f"{folder} holds {len(foreign)} thing{'s' if len(foreign) > 1 else ''} devise did not write "
                          f"(such as {foreign[0]!r}): it may not be devise's cache, so nothing was removed")
    return sorted(((child, size_of(child)) for child in children), key=lambda item: -item[1])


def remove_entries(entries: list[tuple[Path, int]]) -> None:
    """Remove cache entries that `cache_entries` listed (folders only, never a link's target)."""
    for path, _ in entries:
        shutil.rmtree(path)
