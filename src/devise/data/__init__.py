"""Datasets behind one function: `load_dataset(name, root, split)` returns an `ImageSet`."""

from __future__ import annotations

from pathlib import Path

from devise.config import DATASETS
from devise.data.base import ImageSet
from devise.data.cifar import load_cifar100
from devise.data.folder import load_image_folder
from devise.data.tiny_imagenet import load_tiny_imagenet
from devise.data.toy import load_toy
from devise.errors import DeviseError


def load_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    *,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
    progress: bool = True,
    on_bad_image: str = "error",
    val_share: float = 0.1,
    interpolation: str = "bilinear",
) -> ImageSet:
    """Load one split of a dataset by name, resized to `image_size` when given.

    Names: "tiny-imagenet" (zip or folder, cached), "cifar100" (official pickle files),
    "folder" (`root/<class>/<image>`, cached), "toy" (generated coloured shapes, no files needed).
    `on_bad_image` is "error" (stop at the first image that does not decode) or "skip" (leave
    such images out; the set's `skipped` lists them). A folder without val/ is validated on a
    seeded `val_share` of its images. `interpolation` is how a folder's photos are resized.
    """
    if name == "tiny-imagenet":
        images = load_tiny_imagenet(root, split, cache_dir=cache_dir, download=download, progress=progress, image_size=image_size, on_bad_image=on_bad_image)
    elif name == "cifar100":
        images = load_cifar100(root, split, download)
    elif name == "folder":
        if root is None:
            raise DeviseError("the folder dataset needs --data-root PATH")
        images = load_image_folder(root, image_size or 64, None if split == "all" else split, progress=progress, on_bad_image=on_bad_image,
                                   val_share=val_share, cache_dir=cache_dir, interpolation=interpolation)
    elif name == "toy":
        images = load_toy(split, size=image_size or 32)
    else:
        raise DeviseError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return images.resized(image_size) if image_size else images


__all__ = ["DATASETS", "ImageSet", "load_dataset", "load_cifar100",
           "load_image_folder", "load_tiny_imagenet", "load_toy"]
