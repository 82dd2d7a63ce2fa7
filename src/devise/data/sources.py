"""Read files from a zip archive or a folder through one small interface.

Dataset readers ask for files by their path inside the dataset ("train/n01443537/images/x.JPEG")
and never care whether the bytes come from the official zip or from its extracted folder.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from devise.errors import DeviseError


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
        except zipfile.BadZipFile as error:
            raise DeviseError(f"{self.path}: corrupt entry {self.prefix + rel} ({error})") from None
        except OSError as error:
            raise DeviseError(f"cannot read {self.prefix + rel} in {self.path}: {error}") from None

    def read_text(self, rel: str) -> str:
        return self.read(rel).decode("utf-8")

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


def decode_image(data: bytes, size: int | None, where: str) -> np.ndarray:
    """Decode image bytes to an RGB uint8 array (H x W x 3).

    Greyscale, palette and RGBA images all come out as 3-channel RGB. With `size`, the shorter
    side is scaled to `size` and the centre square cut out, so nothing is stretched.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            if size is not None and image.size != (size, size):
                image = square_resize(image, size)
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DeviseError(f"{where} is not a readable image ({error.__class__.__name__})") from None


def square_resize(image: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to `size`, then crop the centre `size` x `size` square."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))
