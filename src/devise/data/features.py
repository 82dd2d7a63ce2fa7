"""A frozen body's features, computed once per image and view and kept in the cache.

While a pretrained body stays frozen its output for an image never changes, so each image's
features (and those of its flipped copy, with `flip`) are computed once and memory-mapped from the
cache: the head's epochs, calibration, evaluation and zero-shot read them. An entry is keyed by the
body's weights, the input pipeline, the view, the precision and the images, each hashed, and is
checked like a decoded dataset (`devise.data.cache`).
"""

from __future__ import annotations

import hashlib
import json
import logging

import torch

from devise.data.base import ImageSet
from devise.data.cache import default_cache_dir, load_arrays, save_arrays
from devise.data.preprocess import Preprocess
from devise.hardware import autocast, freed_memory_kept
from devise.log import progress_bar

log = logging.getLogger(__name__)

VIEWS = {"plain": "as is", "flip": "flipped left to right"}
CPU_BATCH = 64  # a 2-core CPU runs EfficientNet-Lite0 fastest 32-64 images at a time (docs/performance.md)


def feature_batch(batch_size: int, device: torch.device) -> int:
    """Images a forward pass of a pretrained body: at most `CPU_BATCH` on a CPU."""
    return min(batch_size, CPU_BATCH) if torch.device(device).type == "cpu" else batch_size


def tensor_digest(tensors) -> str:
    """A hash of tensors' shapes, types and bytes (weights or images), in order."""
    digest = hashlib.sha1()
    for tensor in tensors:
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{tuple(tensor.shape)}{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def feature_key(body: torch.nn.Module, preprocess: Preprocess, view: str, images: torch.Tensor,
                bf16: bool = False) -> str:
    """The cache key of one view of a set of images through one body, pipeline and precision."""
    parts = {"body": tensor_digest(body.state_dict().values()), "input": preprocess.record(), "view": view,
             "images": tensor_digest([images]), "bf16": bool(bf16)}
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def view_of(images: torch.Tensor, view: str) -> torch.Tensor:
    return images.flip(-1) if view == "flip" else images


@torch.no_grad()
def compute_features(body: torch.nn.Module, preprocess: Preprocess, images: torch.Tensor, *, view: str,
                     device: torch.device, bf16: bool, batch_size: int, progress: bool, desc: str) -> torch.Tensor:
    """The body's output for every image (uint8, N x 3 x H x W), on the CPU, float32; the body
    in channels_last, the layout oneDNN and cuDNN convolutions prefer (values unchanged)."""
    body.eval().to(memory_format=torch.channels_last)
    rows = []
    starts = range(0, len(images), batch_size)
    with freed_memory_kept():  # float32 activations pass glibc's mmap threshold: keep them in the heap
        for start in progress_bar(starts, progress, desc=desc, unit="batch", total=len(starts)):
            batch = view_of(images[start : start + batch_size].to(device), view)
            with autocast(device, bf16):
                rows.append(body(preprocess.prepare(batch)).float().cpu())
    return torch.cat(rows) if rows else torch.zeros(0)


def cached_features(body: torch.nn.Module, preprocess: Preprocess, data: ImageSet, *, views: tuple[str, ...] = ("plain",),
                    device: torch.device = torch.device("cpu"), bf16: bool = False, batch_size: int = 256,
                    progress: bool = True, what: str = "body", cache_dir=None) -> list[torch.Tensor]:
    """For each view, the body's features of every image of `data` (N x D, memory-mapped from
    the cache; float16 where that holds them exactly enough, else float32). Computed and written
    the first time, with one line saying what and how much."""
    folder = default_cache_dir() if cache_dir is None else cache_dir
    found = []
    for view in views:
        entry = folder / "features" / f"{data.name}-{feature_key(body, preprocess, view, data.images, bf16)}"
        arrays = load_arrays(entry, ("features",))
        if arrays is None:
            size = f" at {preprocess.size} px" if preprocess.size else ""
            log.info(f"computing {what} features of {len(data):,} images{size} ({VIEWS[view]}), once: cached in {entry}")
            features = compute_features(body, preprocess, data.images, view=view, device=device, bf16=bf16,
                                        batch_size=feature_batch(batch_size, device), progress=progress, desc=f"features ({VIEWS[view]})")
            stored = features.half() if torch.isfinite(features.half()).all() else features
            save_arrays(entry, {"features": stored}, {"view": view, "images": len(data)})
            arrays = load_arrays(entry, ("features",))
        found.append(arrays["features"])
    return found
