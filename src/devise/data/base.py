"""The one in-memory form every dataset takes.

Images live as a single uint8 tensor (N x 3 x H x W) so that batches are slices, not Python
loops over files; labels are int64 indices into `class_names`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F


@dataclass
class ImageSet:
    """Images, integer labels and class names of one split of a dataset.

    `class_names[i]` is the human-readable label of class i, the text that is later turned into
    a word vector (for Tiny ImageNet a synonym list such as "goldfish, Carassius auratus").
    """

    images: torch.Tensor  # uint8, N x 3 x H x W
    labels: torch.Tensor  # int64, N
    class_names: list[str]
    name: str = "dataset"
    class_ids: list[str] | None = None  # stable identifiers, e.g. WordNet ids; default: the names
    skipped: list[str] = field(default_factory=list)  # images left out because they do not decode

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 N x 3 x H x W, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must hold one entry per image")
        if self.class_ids is None:
            self.class_ids = list(self.class_names)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def subset(self, mask_or_index: torch.Tensor) -> "ImageSet":
        """The images picked by a boolean mask or an index tensor; class names unchanged."""
        return replace(self, images=self.images[mask_or_index], labels=self.labels[mask_or_index])

    def to(self, device: torch.device) -> "ImageSet":
        """The same set with its images and labels on `device` (a GPU holds Tiny ImageNet's
        100,000 uint8 images at 64 px in 1.2 GB, so batches never cross the bus)."""
        if self.images.device == torch.device(device):
            return self
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def resized(self, size: int) -> "ImageSet":
        """A copy at `size` x `size` pixels, resized once here rather than in every batch."""
        if size == self.image_size:
            return self
        return replace(self, images=resize_uint8(self.images, size))


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize a uint8 image tensor with antialiasing, in chunks to bound memory."""
    out = torch.empty((images.shape[0], 3, size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].float()
        block = F.interpolate(block, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + chunk] = block.round_().clamp_(0, 255).to(torch.uint8)
    return out
