"""Read files from a zip archive or a folder through one small interface.

Dataset readers ask for files by their path inside the dataset ("train/n01443537/images/x.JPEG")
and never care whether the bytes come from the official zip or from its extracted folder.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from devise.errors import DeviseError
from devise.log import progress_bar

log = logging.getLogger(__name__)


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
BLOCK_PIXELS = 1 << 20  # 16-bit, 32-bit and float images are scaled to 8 bits this many pixels at a time


class ImageTooLarge(DeviseError):
    """An image whose header declares more pixels than devise decodes (a server answers 413)."""


def decode_image(data: bytes, size: int | None, where: str, interpolation: str = "bilinear") -> np.ndarray:
    """Decode image bytes to an RGB uint8 array (H x W x 3), faithfully whatever the mode.

    16-bit, 32-bit integer and float images are scaled to 8 bits (`eight_bit`), palette, CMYK,
    1-bit, greyscale and alpha images come out as RGB; an image of more than `MAX_PIXELS` pixels
    (or a decompression bomb) is refused from its header, before its pixels are decoded, whatever
    its shape. With `size`, the shorter side is scaled to `size` and the centre square cut out.
    """
    return decode_squares(data, [(size, interpolation)], where)[0]


def decode_squares(data: bytes, squares: list[tuple[int | None, str]], where: str) -> list[np.ndarray]:
    """One decode, cut to several (size, interpolation) squares as `decode_image` would cut each:
    models of different input sizes served side by side read the image once, and nothing larger
    than their squares outlives the decode."""
    with opened_image(data, where) as image:
        image = eight_bit(image)
        return [np.asarray(rgb(square_resize(image, size, interpolation) if size is not None
                               and image.size != (size, size) else image), dtype=np.uint8)
                for size, interpolation in squares]


@contextlib.contextmanager
def opened_image(source: bytes | Path, where: str) -> Iterator[Image.Image]:
    """An image opened from bytes or a file, its header read and checked against `MAX_PIXELS`
    before any pixel is decoded; what fails in the block (a truncated file, say) or before it is
    one line naming `where`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise ImageTooLarge(f"{where} is {image.width} x {image.height} pixels, above devise's limit of "
                                        f"{MAX_PIXELS // 1_000_000} megapixels")
                yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # PIL's own check, as it opens
        raise ImageTooLarge(f"{where} declares over {Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels, above "
                            f"devise's limit of {MAX_PIXELS // 1_000_000} megapixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise DeviseError(f"{where} is not a readable image ({error.__class__.__name__})") from None


def eight_bit(image: Image.Image) -> Image.Image:
    """An 8-bit greyscale (L) or RGB image of any mode PIL opens. 16-bit images (I;16*) are divided
    by 257; 32-bit integer ones (I) likewise when their values pass 255 (most are 16-bit data), and
    by their maximum when they pass 65535; float ones (F) are taken as [0, 1] when they stay within
    it, as [0, 255] otherwise. PIL's own conversion would clip all of these: 16-bit images turn
    white, float ones black. Alpha is dropped; palette images go through RGBA so transparency is
    read. Greyscale stays one channel until `rgb`, after the resize: the same pixels, a third of
    the memory and work."""
    if image.mode.startswith("I") or image.mode == "F":
        return Image.fromarray(eight_bit_values(np.asarray(image), image.mode), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    return image if image.mode in ("RGB", "L") else image.convert("RGB")


def rgb(image: Image.Image) -> Image.Image:
    """The image in RGB (greyscale is converted after any resize: the channels come out equal)."""
    return image if image.mode == "RGB" else image.convert("RGB")


def eight_bit_values(raw: np.ndarray, mode: str) -> np.ndarray:
    """`eight_bit`'s scaling of a 16-bit, 32-bit or float image's values to uint8: a 16-bit one
    through a table of its 65536 values, the others in blocks of `BLOCK_PIXELS`, so that no float64
    copy of a whole large image (eight bytes a pixel, several times over) is ever made."""
    def as_float(block: np.ndarray) -> np.ndarray:
        return np.nan_to_num(block.astype(np.float64))

    if mode.startswith("I;16") and raw.dtype.kind == "u" and raw.dtype.itemsize == 2:
        return np.clip(np.rint(as_float(np.arange(65536)) / 257), 0, 255).astype(np.uint8)[raw]
    flat, out = raw.reshape(-1), np.empty(raw.size, dtype=np.uint8)
    blocks = [slice(start, start + BLOCK_PIXELS) for start in range(0, flat.size, BLOCK_PIXELS)]
    largest = 0.0 if mode.startswith("I;16") else max((as_float(flat[b]).max() for b in blocks), default=0.0)
    for block in blocks:
        values = as_float(flat[block])
        if mode.startswith("I;16"):
            values = values / 257
        elif mode == "I" and largest > 255:
            values = values / (257 if largest <= 65535 else largest / 255)
        elif mode == "F" and largest <= 1:
            values = values * 255
        out[block] = np.clip(np.rint(values), 0, 255)
    return out.reshape(raw.shape)


def decode_many(names: list[str], read, size: int, where, *, on_bad_image: str = "error", progress: bool = True,
                desc: str = "decoding", threads: int = 1,
                interpolation: str = "bilinear") -> tuple[np.ndarray, list[int], list[str]]:
    """Decode many images (`read(name)` gives each one's bytes, `where(name)` names it in errors)
    into one N x size x size x 3 array. A bad image stops everything with its name, or with
    `on_bad_image="skip"` is left out: returns (images, indices of the ones kept, the skipped ones)."""
    images = np.empty((len(names), size, size, 3), dtype=np.uint8)
    bad = [False] * len(names)
    if progress and len(names) >= 1000:  # long enough to say up front what it is doing
        log.info(f"{desc}: decoding {len(names):,} images to {size} px, once: the decoded copy is cached")

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
MAX_RESIZED_PIXELS = 4_000_000  # a longer intermediate (a strip of an image) is not made: its square is cut first


def square_resize(image: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """Scale the shorter side to `size`, then crop the centre `size` x `size` square.

    When the scaled image would be a long strip (a 1 x 39,000,000 image scaled to 224 px high is
    8.7 billion pixels wide), the square is resampled straight from its region of the source
    instead: the same square up to the rounding between PIL's two passes. Ordinary shapes keep the
    two steps, so they come out exactly as they always have."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    resampling = RESAMPLING.get(interpolation, Image.BILINEAR)
    if new_w * new_h > MAX_RESIZED_PIXELS:
        x_scale, y_scale = width / new_w, height / new_h
        box = (left * x_scale, top * y_scale, min(width, (left + size) * x_scale), min(height, (top + size) * y_scale))
        return image.resize((size, size), resampling, box=box)
    image = image.resize((new_w, new_h), resampling)
    return image.crop((left, top, left + size, top + size))
