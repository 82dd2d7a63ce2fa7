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
from devise.data.preprocess import Preprocess


@dataclass(frozen=True)
class Augment:
    """Random transformations applied to training batches."""

    crop_padding: int = 4  # pixels of reflect padding before a random crop back to size; 0: none
    flip: bool = True  # horizontal flip with probability 1/2
    jitter: float = 0.0  # strength of random brightness / contrast / saturation change; 0: none

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.flip or self.jitter > 0

    @classmethod
    def of(cls, settings, size: int | None = None) -> "Augment":
        """A run's augmentation (its crop_padding, flip and jitter settings); for images of `size`
        pixels instead of its image_size (progressive resizing), the padding scaled with them."""
        padding = settings.crop_padding if size is None else round(settings.crop_padding * size / settings.image_size)
        return cls(padding, settings.flip, settings.jitter)


NO_AUGMENT = Augment(crop_padding=0, flip=False, jitter=0.0)


@dataclass(frozen=True)
class AugmentDraw:
    """The random choices of one batch: a crop offset, a flip and colour factors per image."""

    dy: torch.Tensor | None = None
    dx: torch.Tensor | None = None
    flip: torch.Tensor | None = None
    colour: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # brightness, contrast, saturation

    def part(self, rows: slice) -> "AugmentDraw":
        """The choices of some of the batch's images (one process's share of the batch)."""
        return AugmentDraw(*(None if t is None else t[rows] for t in (self.dy, self.dx, self.flip)),
                           None if self.colour is None else tuple(t[rows] for t in self.colour))

    def to(self, device: torch.device) -> "AugmentDraw":
        return AugmentDraw(*(None if t is None else t.to(device) for t in (self.dy, self.dx, self.flip)),
                           None if self.colour is None else tuple(t.to(device) for t in self.colour))

    @staticmethod
    def cat(draws: list["AugmentDraw"]) -> "AugmentDraw":
        """The draws of several batches as one (an epoch's, moved to the device at once)."""
        first = draws[0]

        def joined(get):
            return None if get(first) is None else torch.cat([get(d) for d in draws])

        colour = None if first.colour is None else tuple(joined(lambda d, i=i: d.colour[i]) for i in range(3))
        return AugmentDraw(joined(lambda d: d.dy), joined(lambda d: d.dx), joined(lambda d: d.flip), colour)


def draw_augment(n: int, augment: Augment, generator: torch.Generator) -> AugmentDraw:
    """Draw the random choices for a batch of `n` images from a CPU generator, so that a batch is
    augmented the same way on any device and however the batch is split among processes."""
    dy = dx = flip = colour = None
    if augment.crop_padding > 0:
        dy = torch.randint(0, 2 * augment.crop_padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * augment.crop_padding + 1, (n,), generator=generator)
    if augment.flip:
        flip = torch.rand(n, generator=generator) < 0.5
    if augment.jitter > 0:
        colour = tuple(1 + augment.jitter * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1) for _ in range(3))
    return AugmentDraw(dy, dx, flip, colour)


def apply_augment(images: torch.Tensor, augment: Augment, draw: AugmentDraw) -> torch.Tensor:
    """Apply drawn choices (on the batch's device) to a float batch (N x 3 x H x W, 0-255)."""
    n, _, height, width = images.shape
    if draw.dy is not None:
        pad = augment.crop_padding
        padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
        rows = (draw.dy[:, None] + torch.arange(height, device=images.device))[:, :, None]
        cols = (draw.dx[:, None] + torch.arange(width, device=images.device))[:, None, :]
        # Advanced indexing puts the indexed dims first: N x H x W x C, i.e. channels_last.
        images = padded[torch.arange(n, device=images.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if draw.flip is not None:
        images = torch.where(draw.flip[:, None, None, None], images.flip(3), images)
    if draw.colour is not None:
        images = jitter_colours(images, draw.colour)
    return images


def augment_batch(images: torch.Tensor, augment: Augment, generator: torch.Generator) -> torch.Tensor:
    """Apply `augment` to a float batch (N x 3 x H x W, 0-255), a different draw per image."""
    return apply_augment(images, augment, draw_augment(images.shape[0], augment, generator).to(images.device))


def jitter_colours(images: torch.Tensor, factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Scale brightness, contrast and saturation by per-image factors (each N x 1 x 1 x 1)."""
    brightness, contrast, saturation = factors
    images = images * brightness
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * contrast + mean
    grey = images.mean(dim=1, keepdim=True)
    images = (images - grey) * saturation + grey
    return images.clamp(0, 255)


class BatchLoader:
    """Iterate over (normalised images, labels) batches of an `ImageSet`, on the device its
    images live on (a GPU's memory holds the whole uint8 set: no copy per step).

    The order and the augmentation draws depend only on (seed, epoch), so a resumed run sees
    exactly the batches it would have seen without the stop. With `shard` = (rank, processes),
    each batch is cut into that many contiguous parts and this process gets part `rank`: the
    processes together see the batches of one process, augmented alike. With `limit`, an epoch
    is the first `limit` images of its order (a shorter epoch, a fresh draw each time).
    """

    def __init__(self, data: ImageSet, batch_size: int, preprocess: Preprocess, *, shuffle: bool = False,
                 augment: Augment = NO_AUGMENT, seed: int = 0, drop_last: bool = False,
                 shard: tuple[int, int] = (0, 1), limit: int = 0):
        self.data = data
        self.batch_size = batch_size
        self.preprocess = preprocess
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.drop_last = drop_last
        self.shard = shard
        self.limit = limit
        self.epoch = 0

    def __len__(self) -> int:
        n = min(self.limit, len(self.data)) if self.limit else len(self.data)  # images an epoch
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n, size, device = len(self.data), self.batch_size, self.data.images.device
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        used = min(self.limit, n) if self.limit else n
        batches = [(start, min(size, used - start)) for start in range(0, len(self) * size, size)]
        # The epoch's order and augmentation draws go to the device once, not batch by batch.
        draws = None
        if self.augment.enabled and batches:
            draws = AugmentDraw.cat([draw_augment(count, self.augment, generator) for _, count in batches]).to(device)
        if self.shuffle:
            order = order.to(device)
        rank, processes = self.shard
        for start, count in batches:
            mine = shard_rows(count, rank, processes)
            rows = slice(start + mine.start, start + mine.stop)
            if rows.start == rows.stop:
                continue
            # Unshuffled batches are contiguous: a view, no copy.
            index = order[rows] if self.shuffle else slice(rows.start, rows.stop)
            images = self.data.images[index].float()
            if draws is not None:
                images = apply_augment(images, self.augment, draws.part(rows))
            yield self.preprocess.prepare(images), self.data.labels[index]


def shard_rows(n: int, rank: int, processes: int) -> slice:
    """Process `rank`'s contiguous part of a batch of `n` (parts differ in size by at most one)."""
    size, extra = divmod(n, processes)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + (rank < extra))


class FeatureBatches:
    """Batches of cached features and labels, as `BatchLoader` gives images: the order depends only
    on (seed, epoch), and each image's view (as is, or flipped) is drawn per epoch from the same
    generator, so a resumed run sees the batches it would have seen. With `shard`, each batch is
    cut among processes as `BatchLoader` cuts it."""

    def __init__(self, views: list[torch.Tensor], labels: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False, shard: tuple[int, int] = (0, 1),
                 device: torch.device = torch.device("cpu")):
        on_gpu = device.type != "cpu"
        self.views = [v.to(device) for v in views] if on_gpu else views
        self.labels = labels.to(device)
        self.batch_size, self.shuffle, self.seed, self.drop_last, self.shard = batch_size, shuffle, seed, drop_last, shard
        self.device = device
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        view = torch.randint(len(self.views), (n,), generator=generator) if self.shuffle else torch.zeros(n, dtype=torch.long)
        rank, processes = self.shard
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            count = min(self.batch_size, n - start)
            mine = shard_rows(count, rank, processes)
            rows = order[start + mine.start : start + mine.stop]
            if len(rows) == 0:
                continue
            chosen = view[rows]
            batch = torch.empty(len(rows), self.views[0].shape[1], dtype=torch.float32, device=self.device)
            for v, features in enumerate(self.views):
                picked = (chosen == v).nonzero()[:, 0]
                if len(picked):
                    batch[picked.to(self.device)] = features[rows[picked].to(features.device)].to(self.device).float()
            yield batch, self.labels[rows.to(self.device)]
