"""CIFAR-100 (fine labels, 32 x 32) in its official pickle format: the paper's zero-shot target.

torchvision fetches and unpacks the archive for users who are online; the files are then read
here with an unpickler that only accepts the plain containers and numpy arrays the format uses,
so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from devise.data.base import ImageSet
from devise.data.cache import default_cache_dir
from devise.errors import DeviseError

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FOLDER = "cifar-100-python"
SPLIT_FILES = {"train": "train", "test": "test", "val": "test"}


class _SafeUnpickler(pickle.Unpickler):
    """Allows only what the CIFAR files contain: builtin containers and numpy arrays."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return _SafeUnpickler(handle, encoding="bytes").load()
    except FileNotFoundError:
        raise DeviseError(f"{path}: missing CIFAR-100 file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise DeviseError(f"{path} is not a CIFAR-100 pickle ({error})") from None


def load_cifar100(root: str | Path | None = None, split: str = "test", download: bool = False) -> ImageSet:
    """One split ("train" or "test"; "val" means test) of CIFAR-100 with its 100 fine labels.

    `root` is the folder that holds (or will hold) `cifar-100-python/`, as for torchvision's
    `CIFAR100(root, download=True)`; default: the devise cache folder.
    """
    if split not in SPLIT_FILES:
        raise DeviseError(f"CIFAR-100 has splits train and test, not {split!r}")
    root = Path(root).expanduser() if root else default_cache_dir() / "cifar100"
    folder = root if root.name == FOLDER else root / FOLDER
    if not folder.is_dir():
        if not download:
            raise DeviseError(f"{root} holds no {FOLDER} folder: pass --download to fetch CIFAR-100")
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(URL, str(root), md5=MD5)
        except Exception as error:  # network errors come in many types; the user needs one line
            raise DeviseError(f"could not download {URL}: {error}") from None
    meta = _unpickle(folder / "meta")
    data = _unpickle(folder / SPLIT_FILES[split])
    try:
        names = [n.decode() for n in meta[b"fine_label_names"]]
        pixels = np.asarray(data[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = torch.tensor(list(data[b"fine_labels"]), dtype=torch.int64)
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as error:  # not the dicts CIFAR holds
        raise DeviseError(f"{folder} does not have the CIFAR-100 layout ({error.__class__.__name__}: {error})") from None
    if len(labels) != len(pixels) or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(names)):
        raise DeviseError(f"{folder} does not have the CIFAR-100 layout (labels do not match the images or names)")
    return ImageSet(torch.from_numpy(pixels.copy()), labels, names, "cifar100")
