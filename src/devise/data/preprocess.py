"""How a uint8 image batch becomes a network's input: the one pipeline of training, evaluation,
prediction and serving (an exported ONNX graph holds its last step, the normaliser)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocess:
    """How a uint8 batch becomes the network's input: resized so that its side is `size / crop_pct`
    pixels and its centre `size` square cut out (a pretrained body's own pipeline, from timm's data
    config), then each channel normalised by a mean and standard deviation on the 0-255 scale.
    devise's own bodies see their images as stored (`size` None): no resize, no crop."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int | None = None  # the square the network sees; None: the images as they come
    crop_pct: float = 1.0  # the share of the resized image the centre crop keeps
    interpolation: str = "bilinear"  # how the images are resized: bilinear or bicubic

    @classmethod
    def fit(cls, images: torch.Tensor, max_images: int = 20000) -> "Preprocess":
        """Channel statistics of (an evenly spaced sample of) a uint8 image tensor."""
        step = max(1, images.shape[0] // max_images)
        sample = images[::step].float()
        std = sample.std(dim=(0, 2, 3)).nan_to_num(0).clamp(min=1.0)  # a channel that never varies: no division by 0
        return cls(tuple(sample.mean(dim=(0, 2, 3)).tolist()), tuple(std.tolist()))

    @property
    def resize(self) -> int | None:
        """The side images are resized to before the centre crop (None: no resize)."""
        return None if self.size is None else round(self.size / self.crop_pct)

    def record(self) -> dict:
        """The pipeline as plain values, for a checkpoint or an exported config.json."""
        return {"mean": list(self.mean), "std": list(self.std), "size": self.size, "crop_pct": self.crop_pct,
                "interpolation": self.interpolation}

    @classmethod
    def from_record(cls, record: dict) -> "Preprocess":
        return cls(tuple(record["mean"]), tuple(record["std"]), record.get("size"), float(record.get("crop_pct", 1.0)),
                   record.get("interpolation", "bilinear"))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mean = channel_values(self.mean, images.dtype, images.device)
        std = channel_values(self.std, images.dtype, images.device)
        return (images - mean) / std

    def fitted(self, images: torch.Tensor) -> torch.Tensor:
        """A float batch (0-255) of square images as stored or decoded, resized to `resize` and
        centre-cropped to `size`, as the network expects it."""
        if self.size is None:
            return images
        side = self.resize
        if images.shape[-1] != side or images.shape[-2] != side:
            # antialias=True: PIL's filters, upsampling too, so a batch is resized as a decoded photo is
            images = F.interpolate(images, size=(side, side), mode=self.interpolation, align_corners=False,
                                   antialias=True).clamp_(0, 255)
        top = (side - self.size) // 2
        return images[:, :, top : top + self.size, top : top + self.size]

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """A batch (uint8, or float on the 0-255 scale) -> network input: float32, resized and
        cropped where the pipeline says, normalised, channels_last."""
        return self(self.fitted(images.float())).contiguous(memory_format=torch.channels_last)


@functools.lru_cache(maxsize=32)
def channel_values(values: tuple[float, float, float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Per-channel constants as a 1 x 3 x 1 x 1 tensor on `device`, made once rather than per batch."""
    return torch.tensor(values, dtype=dtype, device=device).view(1, 3, 1, 1)
