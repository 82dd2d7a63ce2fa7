"""Read files from a zip archive or a folder through one small interface.

Dataset readers ask for files by their path inside the dataset ("train/n01443537/images/x.JPEG")
and never care whether the bytes come from the official zip or from its extracted folder.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from devise.errors import DeviseError
from devise.log import progress_bar


class FileSource:
    """Files below a prefix of a zip archive or below a folder."""

    def __init__(self, path: Path, prefix: str = ""):
        self.path = path
        self.prefix = prefix
        self._zip: zipfile.ZipFile | None = None
        if path.is_file():
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as error:
                raise DeviseError(f"{path} is not a readable zip archive ({error})") from None
            self._names = [n for n in self._zip.namelist() if not n.endswith("/")]

    @property
    def is_zip(self) -> bool:
        return self._zip is not None

    def exists(self, rel: str) -> bool:
        if self._zip is not None:
            try:
                self._zip.getinfo(self.prefix + rel)
                return True
            except KeyError:
                return False
        return (self.path / self.prefix / rel).is_file()

    def read(self, rel: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(self.prefix + rel)
            return (self.path / self.prefix / rel).read_bytes()
        except KeyError:
            raise DeviseError(f"{self.path}: missing {self.prefix + rel}") from None
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:  # a bad header, or a corrupt deflate stream
            raise DeviseError(f"{self.path}: corrupt entry {self.prefix + rel} ({error})") from None
        except OSError as error:
            raise DeviseError(f"cannot read {self.prefix + rel} in {self.path}: {error}") from None

    def read_text(self, rel: str) -> str:
        try:
            return self.read(rel).decode("utf-8")
        except UnicodeDecodeError:
            raise DeviseError(f"{self.path}: {self.prefix + rel} is not UTF-8 text") from None

    def list(self, folder: str) -> list[str]:
        """Sorted paths of the files below `folder`, relative to the source's prefix."""
        start = self.prefix + folder.rstrip("/") + "/"
        if self._zip is not None:
            return sorted(n[len(self.prefix) :] for n in self._names if n.startswith(start))
        base = self.path / self.prefix
        found = []
        for dirpath, _, filenames in os.walk(base / folder):
            for filename in filenames:
                found.append(str((Path(dirpath) / filename).relative_to(base)).replace(os.sep, "/"))
        return sorted(found)

    def find_prefix(self, marker: str) -> str | None:
        """The prefix under which `marker` lives in a zip (e.g. "tiny-imagenet-200/"), or None."""
        if self._zip is None:
            return "" if (self.path / marker).is_file() else None
        for name in self._names:
            if name == marker or name.endswith("/" + marker):
                return name[: -len(marker)]
        return None


MAX_PIXELS = 40_000_000  # a larger image is refused before its pixels are decoded


def decode_image(data: bytes, size: int | None, where: str, interpolation: str = "bilinear") -> np.ndarray:
    """Decode image bytes to an RGB uint8 array (H x W x 3), faithfully whatever the mode.

    16-bit, 32-bit integer and float images are scaled to 8 bits (`eight_bit_rgb`), palette, CMYK,
    1-bit, greyscale and alpha images come out as RGB; an image of more than `MAX_PIXELS` pixels
    (or a decompression bomb) is refused from its header, before its pixels are decoded. With
    `size`, the shorter side is scaled to `size` and the centre square cut out.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise DeviseError(f"{where} is {image.width} x {image.height} pixels, above devise's limit of "
                                      f"{MAX_PIXELS // 1_000_000} megapixels")
                image = eight_bit_rgb(image)
                if size is not None and image.size != (size, size):
                    image = square_resize(image, size, interpolation)
                return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as error:
        raise DeviseError(f"{where} is not a readable image ({error.__class__.__name__})") from None


def eight_bit_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB image of any mode PIL opens. 16-bit images (I;16*) are divided by 257; 32-bit
    integer ones (I) likewise when their values pass 255 (most are 16-bit data), and by their
    maximum when they pass 65535; float ones (F) are taken as [0, 1] when they stay within it, as
    [0, 255] otherwise. PIL's own conversion would clip all of these: 16-bit images turn white,
    float ones black. Alpha is dropped; palette images go through RGBA so transparency is read."""
    if image.mode.startswith("I") or image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        if image.mode.startswith("I;16"):
            values = values / 257
        elif image.mode == "I" and values.max() > 255:
            values = values / (257 if values.max() <= 65535 else values.max() / 255)
        elif image.mode == "F" and values.max() <= 1:
            values = values * 255
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")


def decode_many(names: list[str], read, size: int, where, *, on_bad_image: str = "error", progress: bool = True,
                desc: str = "decoding", threads: int = 1,
                interpolation: str = "bilinear") -> tuple[np.ndarray, list[int], list[str]]:
    """Decode many images (`read(name)` gives each one's bytes, `where(name)` names it in errors)
    into one N x size x size x 3 array. A bad image stops everything with its name, or with
    `on_bad_image="skip"` is left out: returns (images, indices of the ones kept, the skipped ones)."""
    images = np.empty((len(names), size, size, 3), dtype=np.uint8)
    bad = [False] * len(names)

    def decode(i: int) -> None:
        try:
            images[i] = decode_image(read(names[i]), size, where(names[i]), interpolation)
        except DeviseError:
            if on_bad_image != "skip":
                raise
            bad[i] = True

    if threads > 1:  # decoding releases the GIL, so two threads help
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(progress_bar(pool.map(decode, range(len(names)), chunksize=256), progress, total=len(names),
                              desc=desc, unit="img"))
    else:
        for i in progress_bar(range(len(names)), progress, desc=desc, unit="img"):
            decode(i)
    kept = [i for i, b in enumerate(bad) if not b]
    skipped = [where(names[i]) for i, b in enumerate(bad) if b]
    return (images[kept] if skipped else images), kept, skipped


RESAMPLING = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def square_resize(image: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """Scale the shorter side to `size`, then crop the centre `size` x `size` square."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), RESAMPLING.get(interpolation, Image.BILINEAR))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))
