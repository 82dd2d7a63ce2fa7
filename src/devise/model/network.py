"""The visual model: a body (devise's own small CNN, or any timm network), and a swappable head.

`create_model(spec, ...)` builds a network from a name so that the command line and the tests
never import concrete classes. Every network has the same two parts:

- `body`: devise's own convolutions, then the fully connected layers with dropout (the paper's
  recipe against overfitting); or a timm network's pooled features, then dropout. It ends in a
  feature vector of `feature_dim` values;
- `head`: the last layer, a `Linear` to the class logits for the softmax model, or an
  `EmbeddingHead` to a unit-length word vector for DeViSE. Swapping the head keeps the body's
  trained weights: that is the warm start.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from devise.errors import DeviseError
from devise.model.pretrained import create_timm_network, timm_architecture


def conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + f(x): lets a 9-layer net train fast without losing the signal."""

    def __init__(self, channels: int):
        super().__init__()
        self.inner = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


def cnn_layers(width: int, stem_pool: bool = False) -> nn.Sequential:
    """The paper's style: four plain conv blocks, each halving the resolution (the first
    already pools, so `stem_pool` changes nothing)."""
    w = width
    return nn.Sequential(conv_bn(3, w, pool=True), conv_bn(w, 2 * w, pool=True),
                         conv_bn(2 * w, 4 * w, pool=True), conv_bn(4 * w, 8 * w, pool=True))


def resnet9_layers(width: int, stem_pool: bool = False) -> nn.Sequential:
    """The 9-layer residual network of the DAWNBench CIFAR-10 entries, which trains in minutes.

    With `stem_pool`, the first conv sees the full image and is max-pooled at once, as in
    ImageNet ResNets: a 64 px image then costs little more than a 32 px one, but the network
    learns its own downsampling instead of getting a pre-shrunk image.
    """
    w = width
    return nn.Sequential(conv_bn(3, w, pool=stem_pool), conv_bn(w, 2 * w, pool=True), Residual(2 * w),
                         conv_bn(2 * w, 4 * w, pool=True), conv_bn(4 * w, 8 * w, pool=True), Residual(8 * w))


ARCHITECTURES = {"cnn": cnn_layers, "resnet9": resnet9_layers}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a network before loading its weights."""

    body: str = "resnet9"  # cnn, resnet9, a pretrained name devise knows, or timm:NAME
    width: int = 32  # channels of the first conv block; later blocks use 2x, 4x, 8x
    hidden: int = 512  # units of the fully connected layer between the convolutions and the head
    dropout: float = 0.4  # between the conv body and the FC layers, and before the head
    stem_pool: bool = False  # max-pool right after the first conv (resnet9)

    @classmethod
    def of(cls, settings) -> "ModelSpec":
        """The network of a run's settings (a `TrainConfig`, or anything with its fields)."""
        return cls(settings.body, settings.width, settings.hidden, settings.dropout, settings.stem_pool)


class VisualNet(nn.Module):
    """devise's own: conv layers -> global max pool -> dropout -> FC + ReLU -> dropout -> head.
    A timm body: the network's pooled features -> dropout -> head (`pretrained`: its weights)."""

    def __init__(self, spec: ModelSpec, num_outputs: int, pretrained: bool = False, pretrained_file: str | None = None):
        super().__init__()
        architecture = timm_architecture(spec.body)
        if architecture is not None:
            network = create_timm_network(architecture, 0, pretrained, spec.body, pretrained_file)
            self.body = nn.Sequential(network, nn.Dropout(spec.dropout))
            self.feature_dim = int(network.num_features)
        elif spec.body in ARCHITECTURES:
            conv_out = 8 * spec.width
            self.body = nn.Sequential(
                ARCHITECTURES[spec.body](spec.width, spec.stem_pool),
                nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(spec.dropout),
                nn.Linear(conv_out, spec.hidden), nn.ReLU(inplace=True), nn.Dropout(spec.dropout),
            )
            self.feature_dim = spec.hidden
        else:
            raise DeviseError(f"unknown body {spec.body!r}; choose one of {', '.join(ARCHITECTURES)}, "
                              "efficientnet-lite0 or timm:NAME")
        self.head: nn.Module = nn.Linear(self.feature_dim, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class EmbeddingHead(nn.Module):
    """Maps features to a unit-length vector in the label space: the paper's single linear layer
    of the embedding's size, or a small MLP when `hidden` is given."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None):
        super().__init__()
        if hidden:
            self.project = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
        else:
            self.project = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(x).float(), dim=-1)


def create_model(spec: ModelSpec, num_outputs: int, pretrained: bool = False,
                 pretrained_file: str | None = None) -> VisualNet:
    """A network with a softmax (logit) head of `num_outputs` classes; a timm body with its
    pretrained weights when `pretrained` (the head stays new)."""
    return VisualNet(spec, num_outputs, pretrained, pretrained_file)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
