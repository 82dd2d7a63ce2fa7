"""Any folder of images laid out as `root/<class name>/<image>`, the torchvision ImageFolder way."""

from __future__ import annotations

from pathlib import Path

import torch

from devise.data.base import ImageSet
from devise.data.sources import decode_many
from devise.errors import DeviseError


def load_image_folder(root: str | Path, size: int = 64, split: str | None = None, progress: bool = True,
                      on_bad_image: str = "error") -> ImageSet:
    """Every image below `root/<class>/`, resized (shorter side, then centre crop) to `size`.

    Class names are the folder names, sorted. With `split`, `root/<split>/` is used when it
    exists, so a folder with `train/` and `val/` inside works too. Hidden files are skipped; any
    other file that does not decode as an image is an error that names it.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DeviseError(f"{root}: no such folder")
    if split and (root / split).is_dir():
        root = root / split
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
