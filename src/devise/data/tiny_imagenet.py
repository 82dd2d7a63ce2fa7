"""Tiny ImageNet (200 classes, 64 x 64): from the official zip, its extracted folder, or the web.

The whole set is decoded once (both splits, about 1.3 GB of uint8) into the cache; later loads
memory-map that copy and take well under a second.
"""

from __future__ import annotations

from pathlib import Path

import torch

from devise.data.base import ImageSet, resize_uint8
from devise.data.cache import default_cache_dir, derived_array, load_arrays, load_extra, save_arrays, source_fingerprint
from devise.data.sources import FileSource, decode_many
from devise.errors import DeviseError

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"  # of the official archive
FILENAME = "tiny-imagenet-200.zip"
SPLITS = ("train", "val")
ARRAYS = tuple(f"{split}_{part}" for split in SPLITS for part in ("images", "labels"))  # a cache entry holds all four


def load_tiny_imagenet(
    root: str | Path | None = None,
    split: str = "train",
    *, cache_dir: str | Path | None = None,
    download: bool = False,
    progress: bool = True,
    image_size: int | None = None,
    on_bad_image: str = "error",
) -> ImageSet:
    """One split of Tiny ImageNet as an `ImageSet`, at `image_size` pixels (default: 64).

    `root` is the official zip, its extracted `tiny-imagenet-200` folder, or a folder holding
    either. Without `root`, the archive is looked for in the cache and, with `download=True`,
    fetched from the official address and checked against its MD5. Resized copies are cached
    beside the decoded images, so a second load at the same size is as quick as the first.
    """
    if split not in SPLITS:
        raise DeviseError(f"Tiny ImageNet has splits {', '.join(SPLITS)}, not {split!r}")
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    located = locate(root, cache_dir, download)
    entry = cache_dir / f"tiny-imagenet-200-{source_fingerprint(*identifying_files(located))}"
    arrays = load_arrays(entry, ARRAYS)
    if arrays is None:  # only now open the source: listing a 110,000-entry zip takes a second
        arrays, extra = decode_all(open_source(located), progress, on_bad_image)
        save_arrays(entry, arrays, extra)
        arrays = load_arrays(entry, ARRAYS)
    extra = load_extra(entry)
    skipped = [name for name in extra.get("skipped", []) if f": {split}/" in name]
    if skipped and on_bad_image != "skip":
        raise DeviseError(f"{skipped[0]} is not a readable image ({len(skipped)} in the {split} split, left out "
                          f"by an earlier --on-bad-image skip; use it again to leave them out)")
    images = arrays[f"{split}_images"]
    if image_size and image_size != images.shape[-1]:
        images = derived_array(entry, f"{split}_images_{image_size}px", lambda: resize_uint8(images, image_size))
    return ImageSet(images, arrays[f"{split}_labels"], extra["class_names"], "tiny-imagenet", class_ids=extra["wnids"],
                    skipped=skipped)


def locate(root: str | Path | None, cache_dir: Path, download: bool) -> Path:
    """The official zip, or the extracted folder holding wnids.txt, that `root` points to."""
    if root is None:
        archive = cache_dir / "downloads" / FILENAME
        if not archive.is_file():
            if not download:
                raise DeviseError("no Tiny ImageNet path given: pass --data-root PATH, or --download to fetch it")
            download_archive(archive)
        root = archive
    root = Path(root).expanduser()
    if not root.exists():
        raise DeviseError(f"{root}: no such file or folder")
    if root.is_file():
        return root
    for candidate in (root, root / "tiny-imagenet-200"):
        if (candidate / "wnids.txt").is_file():
            return candidate
    if (root / FILENAME).is_file():
        return root / FILENAME
    raise DeviseError(f"{root} holds neither {FILENAME} nor a tiny-imagenet-200 folder with wnids.txt")


def identifying_files(located: Path) -> list[Path]:
    """The files whose size and date identify this copy of the dataset, for the cache key."""
    if located.is_dir():
        return [located / "wnids.txt", located / "val" / "val_annotations.txt"]
    return [located]


def open_source(located: Path) -> FileSource:
    """The dataset's files, read from the zip (wherever wnids.txt sits in it) or the folder."""
    source = FileSource(located)
    if source.is_zip:
        prefix = source.find_prefix("wnids.txt")
        if prefix is None:
            raise DeviseError(f"{located} is not a Tiny ImageNet archive: it has no wnids.txt")
        source.prefix = prefix
    return source


def download_archive(archive: Path) -> None:
    """Fetch the official archive (about 240 MB) and verify its MD5 checksum."""
    from torchvision.datasets.utils import check_integrity, download_url

    archive.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url(URL, str(archive.parent), FILENAME, MD5)
    except Exception as error:  # network errors come in many types; the user needs one line
        raise DeviseError(f"could not download {URL}: {error}") from None
    if not check_integrity(str(archive), MD5):
        archive.unlink(missing_ok=True)
        raise DeviseError(f"downloaded {FILENAME} does not match its MD5 checksum; removed it, try again")


def read_class_names(source: FileSource) -> tuple[list[str], list[str]]:
    """The 200 wnids in their official order and each one's synonym list from words.txt."""
    wnids = [line.strip() for line in source.read_text("wnids.txt").splitlines() if line.strip()]
    words = {}
    for line in source.read_text("words.txt").splitlines():
        wnid, _, synonyms = line.partition("\t")
        words[wnid.strip()] = synonyms.strip()
    missing = [w for w in wnids if w not in words]
    if missing:
        raise DeviseError(f"words.txt has no entry for {', '.join(missing)}")
    return wnids, [words[w] for w in wnids]


def list_split(source: FileSource, wnids: list[str]) -> dict[str, tuple[list[str], list[int]]]:
    """For each split, the image paths and their class indices, in a fixed order."""
    index = {wnid: i for i, wnid in enumerate(wnids)}
    train_files, train_labels = [], []
    for wnid in wnids:
        files = [f for f in source.list(f"train/{wnid}/images") if f.lower().endswith((".jpeg", ".jpg", ".png"))]
        train_files += files
        train_labels += [index[wnid]] * len(files)
    val_files, val_labels = [], []
    for line in source.read_text("val/val_annotations.txt").splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        if parts[1] not in index:
            raise DeviseError(f"val_annotations.txt names {parts[1]}, which is not in wnids.txt")
        val_files.append(f"val/images/{parts[0]}")
        val_labels.append(index[parts[1]])
    return {"train": (train_files, train_labels), "val": (val_files, val_labels)}


def decode_all(source: FileSource, progress: bool, on_bad_image: str = "error") -> tuple[dict[str, torch.Tensor], dict]:
    """Decode every image of both splits into uint8 tensors (greyscale becomes RGB); with
    `on_bad_image="skip"`, images that do not decode are left out and listed in the extra."""
    wnids, class_names = read_class_names(source)
    arrays, skipped = {}, []
    for split, (files, labels) in list_split(source, wnids).items():
        if not files:
            raise DeviseError(f"{source.path} has no {split} images")
        images, kept, bad = decode_many(files, source.read, 64, lambda name: f"{source.path}: {name}", on_bad_image=on_bad_image,
                                        progress=progress, desc=f"decoding {split}", threads=2)
        arrays[f"{split}_images"] = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        arrays[f"{split}_labels"] = torch.tensor(labels, dtype=torch.int64)[kept]
        skipped += bad
    return arrays, {"wnids": wnids, "class_names": class_names, "skipped": skipped}
