"""The visual model: a body (devise's own small CNN, or any timm network) and a swappable head.

Every network has a `body` ending in a feature vector of `feature_dim` values (devise's own:
convolutions, then fully connected layers with dropout, the paper's recipe against overfitting; a
timm network: its pooled features, then dropout) and a `head`: a `Linear` to class logits, or an
`EmbeddingHead` to a unit vector in the label space. Swapping the head keeps the body's trained
weights: that is the warm start. `build_network` is the one build function; the input pipeline
and the size a dataset is kept at follow from the body.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from devise.config import OWN_BODIES, TrainConfig
from devise.data.preprocess import Preprocess
from devise.errors import DeviseError
from devise.model.pretrained import create_timm_network, data_config, timm_architecture


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


ARCHITECTURES = {name: globals()[f"{name}_layers"] for name in OWN_BODIES}  # one per own body, by its name


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
            network = create_timm_network(architecture, 0, pretrained=pretrained, body=spec.body, pretrained_file=pretrained_file)
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


def build_network(config: TrainConfig, outputs: int, label_vectors: torch.Tensor | None = None,
                  pretrained: bool = False) -> VisualNet:
    """The network a run's settings describe: its body, and a softmax head of `outputs` classes or,
    given the training labels' vectors, an embedding head into their space. With `pretrained`, a
    timm body starts from the weights the run names (a new run's start); otherwise the weights come
    from a checkpoint or an exported file."""
    model = create_model(ModelSpec.of(config), outputs, pretrained, config.pretrained_file)
    if label_vectors is not None:
        model.head = EmbeddingHead(model.feature_dim, label_vectors.shape[1], config.embed_hidden or None)
    return model


# ---------------------------------------------------------------------------------------------
# Image sizes and the input pipeline


def with_image_size(config: TrainConfig) -> TrainConfig:
    """`config` with its image size set: 0 means the body's own, 32 px for devise's networks and
    the input size of a timm body's weights."""
    if config.image_size:
        return config
    architecture = timm_architecture(config.body)
    return replace(config, image_size=data_config(architecture)["input_size"] if architecture else 32)


def stored_size(preprocess: Preprocess | None, image_size: int, data: str) -> int | None:
    """The size a dataset is kept at in memory for a network whose pipeline is `preprocess` (None:
    one of devise's own bodies, whose pipeline normalises only). devise's own bodies: their image
    size, resized once when loaded. A timm body: the dataset's own size (Tiny ImageNet's 64 px),
    each batch then resized as the weights expect; a folder of photos (`data`) is decoded at the
    size that resize goes to, so no detail is lost first."""
    if preprocess is None or preprocess.size is None:
        return image_size
    return preprocess.resize if data == "folder" else None


def stored_interpolation(preprocess: Preprocess | None) -> str:
    """How photos are resized when decoded: as the pipeline resizes (bilinear for devise's own)."""
    return preprocess.interpolation if preprocess is not None else "bilinear"


def body_pipeline(config: TrainConfig) -> Preprocess | None:
    """A timm body's input pipeline from timm's data config for its weights (interpolation, crop
    share, mean and standard deviation) at the run's image size; None for devise's own bodies,
    whose normaliser is fitted to the training images (`input_pipeline`)."""
    architecture = timm_architecture(config.body)
    if architecture is None:
        return None
    cfg = data_config(architecture)
    return Preprocess(tuple(255 * m for m in cfg["mean"]), tuple(255 * s for s in cfg["std"]), config.image_size,
                      cfg["crop_pct"], cfg["interpolation"])


def input_pipeline(config: TrainConfig, images: torch.Tensor | None = None) -> Preprocess:
    """How a run's images become its network's input: a timm body's own pipeline, or for devise's
    own bodies each channel normalised by the training images' statistics (`images`)."""
    return body_pipeline(config) or Preprocess.fit(images)
