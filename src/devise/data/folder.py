"""Any folder of images laid out as `root/<class name>/<image>`, the torchvision ImageFolder way,
or split as `root/train/<class>/...` and `root/val/<class>/...`.

The decoded images are cached as Tiny ImageNet's are (`devise.data.cache`): an entry is keyed by
every image file's path, size and modification time, the image size and `on_bad_image`, so a
second load reads the cached copy and a changed, added or removed file makes a new entry.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import torch

from devise.data.base import ImageSet
from devise.data.cache import default_cache_dir, load_arrays, load_extra, notice, save_arrays
from devise.data.sources import decode_many
from devise.errors import DeviseError


def visible_folders(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]


def split_layout(root: Path) -> bool:
    """Whether `root` holds splits (`train/<class>/...`) rather than classes: only then are folders
    named train and val splits; otherwise they are classes like any other."""
    train = root / "train"
    return train.is_dir() and bool(visible_folders(train))


def list_classes(root: Path) -> list[str]:
    """The class names of a folder of class folders: its subfolders' names, sorted, hidden ones left out."""
    classes = sorted(p.name for p in visible_folders(root))
    if not classes:
        raise DeviseError(f"{root} has no class folders (expected root/<class name>/<image>)")
    return classes


def class_root(root: str | Path, split: str | None) -> tuple[Path, str | None]:
    """The folder whose subfolders are the classes of `split`, and which part of its images the
    split is: None (all of them), "val" (a seeded share of each class's) or another split's name
    (the rest)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DeviseError(f"{root}: no such folder")
    if split_layout(root) and split is not None:
        if (root / split).is_dir():
            return root / split, None
        if split != "val":
            raise DeviseError(f"{root} has no {split}/ folder")
        return root / "train", "val"
    return root, split


def folder_class_names(root: str | Path, split: str | None = None) -> list[str]:
    """The class names of one split of a folder dataset (see `load_image_folder`), read without
    decoding an image: for checking labels before paying for the images."""
    return list_classes(class_root(root, split)[0])


def held_out_rows(labels: torch.Tensor, share: float, seed: int) -> torch.Tensor:
    """A seeded draw of `share` of each class's images (at least one of a class with two or more):
    the validation images of a folder that has no val/ of its own."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique():
        rows = torch.nonzero(labels == c).flatten()
        count = min(len(rows) - 1, max(1, round(share * len(rows)))) if len(rows) > 1 else 0
        chosen.append(rows[torch.randperm(len(rows), generator=generator)[:count]])
    held = torch.zeros(len(labels), dtype=torch.bool)
    held[torch.cat(chosen)] = True
    return held


def load_image_folder(root: str | Path, size: int = 64, split: str | None = None, *, progress: bool = True,
                      on_bad_image: str = "error", val_share: float = 0.1, seed: int = 0,
                      cache_dir: str | Path | None = None, interpolation: str = "bilinear") -> ImageSet:
    """The images of one split, resized (shorter side, then centre crop; `interpolation` bilinear or
    bicubic) to `size`.

    Class names are the folder names, sorted. A folder with `train/` (of class folders) has
    splits: `root/<split>/` is used, and without a `val/` the "val" split is a seeded `val_share`
    of each class's training images, which the "train" split then leaves out. A folder of classes
    alone is split the same way; `split` None takes all of its images. Hidden files are skipped;
    any other file that does not decode is an error that names it, or with `on_bad_image="skip"`
    is left out. The decoded images are kept in `cache_dir` (default: the devise cache).
    """
    folder, part = class_root(root, split)
    data = read_classes(folder, size, progress, on_bad_image, cache_dir, interpolation)
    if part is None:
        return data
    held = held_out_rows(data.labels, val_share, seed)
    return data.subset(held if part == "val" else ~held)


def read_classes(root: Path, size: int, progress: bool, on_bad_image: str,
                 cache_dir: str | Path | None = None, interpolation: str = "bilinear") -> ImageSet:
    """Every image under `root`'s class folders at `size` pixels: from the cache when an entry
    for exactly these files is there, else decoded and cached."""
    classes = list_classes(root)
    files, labels = [], []
    for index, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.is_file() and not p.name.startswith("."))
        files += found
        labels += [index] * len(found)
    if not files:
        raise DeviseError(f"{root} has class folders but no images")
    folder_key, content_key = cache_keys(root, classes, files, size, on_bad_image, interpolation)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    entry = cache / f"folder-{folder_key}-{content_key}"
    arrays = load_arrays(entry, ("images", "labels"))
    if arrays is not None:
        skipped = [str(root / name) for name in load_extra(entry)["skipped"]]  # as this call names the folder
        return ImageSet(arrays["images"], arrays["labels"], classes, root.name, skipped=skipped)
    images, kept, skipped = decode_many([str(f) for f in files], lambda name: Path(name).read_bytes(), size, str,
                                        on_bad_image=on_bad_image, progress=progress, desc=f"reading {root.name}", interpolation=interpolation)
    data = ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                    torch.tensor(labels, dtype=torch.int64)[kept], classes, root.name, skipped=skipped)
    try:
        save_arrays(entry, {"images": data.images, "labels": data.labels},
                    {"root": str(root.resolve()), "class_names": classes,
                     "skipped": [str(Path(name).relative_to(root)) for name in skipped]})
    except OSError as error:  # a read-only or full cache: the images are decoded all the same
        notice(f"could not cache the decoded images in {cache} ({error.strerror or error}); they will be decoded again")
        return data
    for stale in cache.glob(f"folder-{folder_key}-*"):  # entries of this folder's earlier contents
        if stale != entry and ".tmp" not in stale.name:
            shutil.rmtree(stale, ignore_errors=True)
    return data


def cache_keys(root: Path, classes: list[str], files: list[Path], size: int, on_bad_image: str,
               interpolation: str = "bilinear") -> tuple[str, str]:
    """(which folder read how, what it holds): a readable name and hash of the folder with the image
    size and `on_bad_image`, and a hash of every file's path, size and modification time."""
    resized = "" if interpolation == "bilinear" else f"|{interpolation}"  # bilinear entries keep their old keys
    where = hashlib.sha1(f"{root.resolve()}|{size}|{on_bad_image}{resized}".encode()).hexdigest()[:8]
    name = re.sub(r"[^\w.-]+", "_", root.resolve().name)[:40]
    content = hashlib.sha1("\n".join(classes).encode() + b"\0")
    for path in files:
        stat = path.stat()
        content.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return f"{name}-{size}px-{where}", content.hexdigest()[:16]
