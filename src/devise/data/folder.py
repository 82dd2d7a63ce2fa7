"""Any folder of images laid out as `root/<class name>/<image>`, the torchvision ImageFolder way,
or split as `root/train/<class>/...` and `root/val/<class>/...`."""

from __future__ import annotations

from pathlib import Path

import torch

from devise.data.base import ImageSet
from devise.data.sources import decode_many
from devise.errors import DeviseError


def split_layout(root: Path) -> bool:
    """Whether `root` holds splits (`train/<class>/...`) rather than classes: only then are folders
    named train and val splits; otherwise they are classes like any other."""
    train = root / "train"
    return train.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in train.iterdir())


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


def load_image_folder(root: str | Path, size: int = 64, split: str | None = None, progress: bool = True,
                      on_bad_image: str = "error", val_share: float = 0.1, seed: int = 0) -> ImageSet:
    """The images of one split, resized (shorter side, then centre crop) to `size`.

    Class names are the folder names, sorted. A folder with `train/` (of class folders) has
    splits: `root/<split>/` is used, and without a `val/` the "val" split is a seeded `val_share`
    of each class's training images, which the "train" split then leaves out. A folder of classes
    alone is split the same way; `split` None takes all of its images. Hidden files are skipped;
    any other file that does not decode is an error that names it, or with `on_bad_image="skip"`
    is left out.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DeviseError(f"{root}: no such folder")
    if split_layout(root) and split is not None:
        if (root / split).is_dir():
            return read_classes(root / split, size, progress, on_bad_image)
        if split != "val":
            raise DeviseError(f"{root} has no {split}/ folder")
        root, split = root / "train", "held-out val"
    data = read_classes(root, size, progress, on_bad_image)
    if split is None:
        return data
    held = held_out_rows(data.labels, val_share, seed)
    return data.subset(held if split in ("val", "held-out val") else ~held)


def read_classes(root: Path, size: int, progress: bool, on_bad_image: str) -> ImageSet:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DeviseError(f"{root} has no class folders (expected root/<class name>/<image>)")
    files, labels = [], []
    for index, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.is_file() and not p.name.startswith("."))
        files += found
        labels += [index] * len(found)
    if not files:
        raise DeviseError(f"{root} has class folders but no images")
    images, kept, skipped = decode_many([str(f) for f in files], lambda name: Path(name).read_bytes(), size, str,
                                        on_bad_image, progress, f"reading {root.name}")
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                    torch.tensor(labels, dtype=torch.int64)[kept], classes, root.name, skipped=skipped)
