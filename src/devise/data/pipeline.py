"""Batches sliced from in-memory uint8 tensors and augmented as whole batches.

Per-image Python work (PIL transforms in a DataLoader) dominates training time on a small CPU;
here one batch is one index operation, a float conversion and a few tensor ops: random crop
with reflect padding, horizontal flip and optional colour jitter, then normalisation. The
output is channels_last, the memory layout oneDNN convolutions prefer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from devise.data.base import ImageSet


@dataclass(frozen=True)
class Augment:
    """Random transformations applied to training batches."""

    crop_padding: int = 4  # pixels of reflect padding before a random crop back to size; 0: none
    flip: bool = True  # horizontal flip with probability 1/2
    jitter: float = 0.0  # strength of random brightness / contrast / saturation change; 0: none

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.flip or self.jitter > 0


NO_AUGMENT = Augment(crop_padding=0, flip=False, jitter=0.0)


@dataclass(frozen=True)
class Normalizer:
    """Per-channel mean and standard deviation on the 0-255 scale."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def fit(cls, images: torch.Tensor, max_images: int = 20000) -> "Normalizer":
        """Channel statistics of (an evenly spaced sample of) a uint8 image tensor."""
        step = max(1, images.shape[0] // max_images)
        sample = images[::step].float()
        return cls(tuple(sample.mean(dim=(0, 2, 3)).tolist()), tuple(sample.std(dim=(0, 2, 3)).tolist()))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """A batch (uint8, or float on the 0-255 scale) -> normalised float32, channels_last."""
        return self(images.float()).contiguous(memory_format=torch.channels_last)


def augment_batch(images: torch.Tensor, augment: Augment, generator: torch.Generator) -> torch.Tensor:
    """Apply `augment` to a float batch (N x 3 x H x W, 0-255), a different draw per image."""
    n, _, height, width = images.shape
    if augment.crop_padding > 0:
        pad = augment.crop_padding
        padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(height))[:, :, None]
        cols = (dx[:, None] + torch.arange(width))[:, None, :]
        # Advanced indexing puts the indexed dims first: N x H x W x C, i.e. channels_last.
        images = padded[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if augment.flip:
        flip = torch.rand(n, generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    if augment.jitter > 0:
        images = jitter_colours(images, augment.jitter, generator)
    return images


def jitter_colours(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast and saturation factors in [1 - strength, 1 + strength]."""
    n = images.shape[0]

    def factors() -> torch.Tensor:
        return (1 + strength * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1))

    images = images * factors()
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * factors() + mean
    grey = images.mean(dim=1, keepdim=True)
    images = (images - grey) * factors() + grey
    return images.clamp(0, 255)


class BatchLoader:
    """Iterate over (normalised images, labels) batches of an `ImageSet`.

    The order and the augmentation draws depend only on (seed, epoch), so a resumed run sees
    exactly the batches it would have seen without the stop.
    """

    def __init__(self, data: ImageSet, batch_size: int, normalizer: Normalizer, shuffle: bool = False,
                 augment: Augment = NO_AUGMENT, seed: int = 0, drop_last: bool = False):
        self.data = data
        self.batch_size = batch_size
        self.normalizer = normalizer
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.data)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        for step in range(len(self)):
            index = order[step * self.batch_size : (step + 1) * self.batch_size]
            if not self.shuffle:
                index = slice(int(index[0]), int(index[-1]) + 1)  # contiguous: a view, no copy
            images = self.data.images[index].float()
            if self.augment.enabled:
                images = augment_batch(images, self.augment, generator)
            yield self.normalizer.prepare(images), self.data.labels[index]
