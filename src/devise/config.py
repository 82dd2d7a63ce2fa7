"""Run settings as one flat dataclass, the rules they must follow, and the presets.

Flat on purpose (nanoGPT style): every setting is one name, the same in the TOML file, on the
command line (`--batch-size` for `batch_size`) and in the run folder's saved `config.toml`. The
comment beside each field is its help text on the command line (`field_help`).

This module imports nothing else from devise: the model, the data pipeline and the label spaces
read their settings from here, never the other way round. `problems(config)` says, in a user's
words, every rule a config breaks; the code that acts on a config turns them into errors.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

DATASETS = ("tiny-imagenet", "cifar100", "folder", "toy")
HEADS = ("softmax", "embedding")
OWN_BODIES = ("cnn", "resnet9")  # devise's own networks; timm's are "timm:NAME" (devise.model.pretrained)
PRETRAINED_BODIES = ("efficientnet-lite0",)  # weights devise knows by name (devise.model.pretrained.KNOWN)
LOSSES = ("cosine", "hinge", "rank", "crossentropy")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
LABEL_SPACES = ("glove-6b-50d", "word2vec-text", "word2vec-binary", "glove-text", "fasttext-vec", "minilm")
LABEL_RULES = ("first", "mean")
ON_BAD_IMAGE = ("error", "skip")
PROMPT_SETS = ("default", "hypernym")  # built-in prompt templates (devise.labels.spaces.BUILT_IN_PROMPTS)
DEFAULT_RULE = "mean"  # measured on Tiny ImageNet: docs/results.md, DeViSE table


@dataclass
class TrainConfig:
    # data
    data: str = "tiny-imagenet"  # dataset: tiny-imagenet, cifar100, folder or toy
    data_root: str | None = None  # the dataset's zip or folder; unset: the cache (or --download)
    cache_dir: str | None = None  # where decoded datasets are kept (default ~/.cache/devise)
    download: bool = False  # fetch the dataset when it is not on disk
    val_split: str = "val"  # the split validated on after each epoch
    val_share: float = 0.1  # a folder dataset without val/: validate on this seeded share of each class's images
    image_size: int = 0  # pixels the network sees; 0: the body's own (32 for cnn and resnet9, the weights' input size for a timm body)
    train_limit: int = 0  # use only the first N training images (0: all); for quick trials
    unseen: int = 0  # hold this many classes (a seeded draw) out of training, for zero-shot tests
    unseen_seed: int = 0  # the seed of that draw
    # model
    head: str = "softmax"  # softmax (class logits) or embedding (DeViSE: a vector in the label space)
    body: str = "resnet9"  # the visual network: cnn (plain, the paper's style), resnet9, efficientnet-lite0, or timm:NAME (any timm architecture)
    pretrained: bool = False  # start a timm body from pretrained weights (efficientnet-lite0: packaged; timm:NAME: timm's own, from the hub or --pretrained-file)
    pretrained_file: str | None = None  # a local weights file for --pretrained on a timm:NAME body, read by timm's own loader
    width: int = 32  # channels of the first conv block (x2, x4, x8 later); 32 suits a 2-core CPU
    stem_pool: bool = False  # resnet9: max-pool after the first conv, so 64 px images cost what 32 px ones do
    hidden: int = 512  # units of the fully connected layer before the head
    dropout: float = 0.4  # dropout between the convolutions and the FC layer, and before the head
    # embedding head (DeViSE)
    loss: str = "hinge"  # cosine, hinge (one random wrong label), rank (all wrong labels) or crossentropy
    margin: float = 0.1  # margin of the hinge and rank losses
    temperature: float = 0.05  # the crossentropy loss divides the cosines by it
    vectors: str = "glove-6b-50d"  # label space: glove-6b-50d, minilm, or a file format with --vectors-path
    vectors_path: str | None = None  # the vectors file for word2vec-text, word2vec-binary, glove-text, fasttext-vec
    label_rule: str = DEFAULT_RULE  # synonym lists: the "first" usable synonym or the "mean" of all usable
    prompts: str | None = None  # sentence label spaces: "default" (templates like "a photo of a {}."), "hypernym" (each naming the label's WordNet parent: "a photo of a {}, a kind of {parent}.") or a file of templates; a label is their mean
    replacements: str | None = None  # file of 'label<TAB>words' lines for labels the vectors do not know
    random_vectors: bool = False  # control: random unit label vectors of the same size
    centre_labels: bool = False  # take the mean of the training labels' vectors off every label vector (then unit length again), so the direction all labels share stops counting in their cosines
    embed_hidden: int = 0  # 0: one linear layer to the label space (the paper); N: an MLP with N units
    init: str | None = None  # a softmax run folder to warm-start the body from
    freeze_epochs: int = 0  # keep the warm-started body frozen for this many epochs
    distill: float = 0.0  # weight of the --init softmax run's probabilities in the targets (crossentropy loss)
    distill_temperature: float = 1.0  # the teacher's logits are divided by it first: above 1 spreads its probabilities
    # optimisation
    epochs: int = 10  # passes over the training set
    epoch_images: int = 0  # train on this many images an epoch, a fresh draw each time (0: all); set by --budget
    val_images: int = 0  # validate each epoch on this many evenly spaced images (0: all); set by --budget
    batch_size: int = 256  # images a step, over all processes
    optimizer: str = "sgd"  # sgd (Nesterov momentum) or adam
    lr: float = 0.2  # the peak learning rate
    momentum: float = 0.9  # SGD's momentum
    weight_decay: float = 5e-4  # on weights, not on biases and normalisation
    schedule: str = "onecycle"  # the rate over training: onecycle, cosine, step or constant
    warmup: float = 0.25  # share of training spent warming up (onecycle)
    step_epochs: int = 5  # step schedule: multiply the rate by --step-gamma every this many epochs
    step_gamma: float = 0.1  # step schedule: the factor (in (0, 1])
    label_smoothing: float = 0.0  # softmax head: share of each target spread over the other classes
    small_epochs: int = 0  # progressive resizing: the first N epochs train on --small-size images
    small_size: int = 0  # progressive resizing: their size in pixels (cheaper per image)
    # augmentation
    crop_padding: int = 4  # random crops: pixels of reflect padding around the image (0: none)
    flip: bool = True  # random horizontal flips
    jitter: float = 0.0  # random brightness, contrast and saturation, this strong (0: none)
    # machinery
    seed: int = 0  # of initialisation, batch order, augmentation and dropout
    bf16: bool | None = None  # bfloat16 autocast; unset: where the device computes bf16 natively (recorded)
    channels_last: bool = True  # the memory layout oneDNN and cuDNN convolutions prefer
    threads: int = 0  # torch threads; 0: torch's default
    eval_batch_size: int = 1000  # images a batch when validating and evaluating
    on_bad_image: str = "error"  # an image that does not decode: stop with its name (error), or leave it out (skip)
    out: str = "runs/latest"  # the run folder

    def to_dict(self) -> dict:
        """The settings that are set (unset ones are left out, as TOML has no null)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A config from settings by name; `unknown_settings` first says which names it would reject."""
        return cls(**values)


def unknown_settings(values: dict) -> list[str]:
    known = {f.name for f in fields(TrainConfig)}
    return sorted(set(values) - known)


# Settings that name a file or folder; `prompts` may instead name a built-in template set.
PATH_SETTINGS = ("data_root", "cache_dir", "vectors_path", "replacements", "init", "prompts", "pretrained_file")


def is_body(name: str) -> bool:
    """A body name devise can build: its own, a pretrained one it knows, or timm:NAME."""
    return isinstance(name, str) and (name in OWN_BODIES or name in PRETRAINED_BODIES
                                      or (name.startswith("timm:") and len(name) > len("timm:")))


def own_body(config: TrainConfig) -> bool:
    """Whether the run's body is one of devise's own networks (not a timm one)."""
    return config.body in OWN_BODIES


def with_absolute_paths(config: TrainConfig) -> TrainConfig:
    """`config` with every file or folder it names made absolute (`~` expanded, then resolved
    against the working directory), so that a run folder's config.toml means the same from any
    directory."""
    changes = {}
    for name in PATH_SETTINGS:
        value = getattr(config, name, None)
        if isinstance(value, str) and value and not (name == "prompts" and value in PROMPT_SETS):
            changes[name] = str(Path(value).expanduser().resolve())
    return replace(config, **changes)


def field_help() -> dict[str, str]:
    """Each field's comment in this file, by field name: the help text of its flag."""
    line = re.compile(r"^    (\w+): [^=]+=.*?  # (.+)$")
    return {m[1]: m[2] for m in map(line.match, Path(__file__).read_text().splitlines()) if m}


# ---------------------------------------------------------------------------------------------
# The rules


CHOICES = {"data": DATASETS, "head": HEADS, "loss": LOSSES, "optimizer": OPTIMIZERS,
           "schedule": SCHEDULES, "vectors": LABEL_SPACES, "label_rule": LABEL_RULES, "on_bad_image": ON_BAD_IMAGE}

# field: (lowest, highest, whether the lowest is allowed, whether the highest is); None: no bound
RANGES = {
    "image_size": (0, 1024, True, True), "train_limit": (0, None, True, None), "unseen": (0, None, True, None),
    "unseen_seed": (0, None, True, None), "val_share": (0, 1, False, False), "width": (1, 1024, True, True), "hidden": (1, None, True, None),
    "dropout": (0, 1, True, False), "margin": (0, None, True, None), "temperature": (0, None, False, None),
    "embed_hidden": (0, None, True, None), "freeze_epochs": (0, None, True, None), "distill": (0, 1, True, True),
    "distill_temperature": (0, None, False, None), "epochs": (1, None, True, None),
    "epoch_images": (0, None, True, None), "val_images": (0, None, True, None), "batch_size": (1, None, True, None),
    "lr": (0, None, False, None), "momentum": (0, 1, True, False), "weight_decay": (0, None, True, None),
    "warmup": (0, 1, True, False), "step_epochs": (1, None, True, None), "step_gamma": (0, 1, False, True),
    "label_smoothing": (0, 1, True, False), "small_epochs": (0, None, True, None), "small_size": (0, None, True, None),
    "crop_padding": (0, None, True, None), "jitter": (0, 1, True, True), "seed": (0, None, True, None),
    "threads": (0, None, True, None), "eval_batch_size": (1, None, True, None),
}
TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "str | None": (str, type(None)),
         "bool | None": (bool, type(None))}
TYPE_WORDS = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false",
              "str | None": "text", "bool | None": "true or false"}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def type_problems(values: dict) -> list[str]:
    """Settings whose value is not of the field's type (from a TOML file, say: epochs = "ten")."""
    kinds = {f.name: str(f.type) for f in fields(TrainConfig)}
    found = []
    for name, value in values.items():
        expected = TYPES[kinds[name]] if name in kinds else object
        if not isinstance(value, expected) or (isinstance(value, bool) and kinds.get(name) in ("int", "float")):
            found.append(f"{flag(name)} must be {TYPE_WORDS[kinds[name]]}, not {value!r}")
    return found


def outside(value: float, low, high, low_ok: bool, high_ok: bool) -> bool:
    return ((low is not None and (value < low or (value == low and not low_ok)))
            or (high is not None and (value > high or (value == high and not high_ok))))


def range_text(low, high, low_ok: bool, high_ok: bool) -> str:
    if high is None:
        return f"at least {low}" if low_ok else ("positive" if low == 0 else f"above {low}")
    return f"in {'[' if low_ok else '('}{low}, {high}{']' if high_ok else ')'}"


def problems(config: TrainConfig) -> list[str]:
    """Every rule `config` breaks, each as the one line a user should read; empty if it can run."""
    found = type_problems(config.to_dict())
    if found:
        return found
    for name, allowed in CHOICES.items():
        if getattr(config, name) not in allowed:
            found.append(f"{flag(name)} must be one of {', '.join(allowed)}, not {getattr(config, name)!r}")
    for name, bounds in RANGES.items():
        if outside(getattr(config, name), *bounds):
            found.append(f"{flag(name)} must be {range_text(*bounds)}, not {getattr(config, name)!r}")
    if not is_body(config.body):
        found.append(f"--body must be one of {', '.join(OWN_BODIES + PRETRAINED_BODIES)} or timm:NAME, not {config.body!r}")
    if 0 < config.image_size < 8:
        found.append(f"--image-size must be 0 (the body's own) or at least 8, not {config.image_size}")
    if config.image_size and config.crop_padding >= config.image_size:
        found.append("--crop-padding must be smaller than --image-size")
    if config.pretrained and config.body in OWN_BODIES:
        found.append(f"--pretrained needs a pretrained body (efficientnet-lite0 or timm:NAME), not {config.body}")
    if config.pretrained_file and not (config.pretrained and config.body.startswith("timm:")):
        found.append("--pretrained-file needs --pretrained and a timm:NAME body")
    if config.epoch_images and config.epoch_images < config.batch_size:
        found.append("--epoch-images must be 0 (all) or at least --batch-size")
    if config.small_epochs and not 0 < config.small_size < (config.image_size or 32):
        found.append("--small-epochs needs --small-size between 0 and --image-size")
    if config.distill and not (config.head == "embedding" and config.loss == "crossentropy" and config.init):
        found.append("--distill needs --head embedding, --loss crossentropy and --init RUN (the softmax teacher)")
    if config.freeze_epochs and not (config.init or config.pretrained):
        found.append("--freeze-epochs needs --init RUN or --pretrained (a trained body to keep frozen)")
    if config.centre_labels and config.head != "embedding":
        found.append("--centre-labels needs --head embedding (ConSE reads labels in the space of the DeViSE run beside it)")
    if config.prompts and config.vectors != "minilm":
        found.append("--prompts needs a sentence label space (--vectors minilm)")
    if config.vectors_path and config.vectors in ("glove-6b-50d", "minilm"):
        found.append(f"--vectors {config.vectors} is packaged and takes no --vectors-path")
    return found


# ---------------------------------------------------------------------------------------------
# Presets: the settings of `devise reproduce` (and of `devise train --preset NAME`)

# The DeViSE stage of the cpu, cpu-long and gpu presets, chosen for the unseen classes
# (docs/zero-shot.md): a linear head into MiniLM with prompts that name each label's WordNet
# parent, centred on the training labels' mean, the paper's hinge loss, the softmax body kept
# frozen, the preset's own dropout before the head (none in the cpu preset, where 0.2 traded
# WordNet hits and H for 8 of 1,000 images).
UNSEEN_STAGE = dict(epochs=6, freeze_epochs=6, loss="hinge", margin=0.1, vectors="minilm", prompts="hypernym",
                    centre_labels=True, optimizer="adam", lr=1e-3, weight_decay=5e-5, schedule="cosine")

PRESETS: dict[str, dict] = {
    "cpu": {  # about 13 minutes on a 2-core CPU with native bf16 (host D)
        # softmax: 14 cheap epochs at 16 px, then 8 at 32 px, no dropout: with it this small network
        # underfitted to the end (docs/zero-shot.md, "The cpu preset's body")
        "common": dict(data="tiny-imagenet", image_size=32, body="cnn", width=32, hidden=512, dropout=0.0,
                       batch_size=256, crop_padding=4, flip=True),
        "softmax": dict(epochs=22, small_epochs=14, small_size=16, optimizer="sgd", lr=0.2, weight_decay=5e-4,
                        schedule="onecycle", label_smoothing=0.1),
        "devise": UNSEEN_STAGE,
        "unseen": 20, "vocabulary": "target",
    },
    "cpu-long": {  # a stronger result within the hour on the same CPU
        "common": dict(data="tiny-imagenet", image_size=64, body="resnet9", width=32, stem_pool=True, hidden=512,
                       dropout=0.2, batch_size=256, crop_padding=8, flip=True),
        "softmax": dict(epochs=15, small_epochs=5, small_size=32, optimizer="sgd", lr=0.2, weight_decay=5e-4,
                        schedule="onecycle", label_smoothing=0.1),
        "devise": UNSEEN_STAGE,  # chosen again on this body (docs/zero-shot.md)
        "unseen": 20, "vocabulary": "target",
    },
    "gpu": {  # one GPU: the default CNN at twice the width on the full 64 px images, all data on the GPU
        "common": dict(data="tiny-imagenet", image_size=64, body="resnet9", width=64, hidden=512, dropout=0.2,
                       batch_size=512, crop_padding=8, flip=True, eval_batch_size=2000),
        "softmax": dict(epochs=30, optimizer="sgd", lr=0.4, weight_decay=5e-4, schedule="onecycle",
                        label_smoothing=0.1),
        "devise": UNSEEN_STAGE,  # chosen on the cpu and cpu-long bodies; not yet screened on this one
        "unseen": 20, "vocabulary": "target",
    },
    "paper": {  # the student paper: the plain CNN at 64 px, dropout 0.4 with augmentation, Adam, hinge loss
        "common": dict(data="tiny-imagenet", image_size=64, body="cnn", width=32, hidden=512, dropout=0.4,
                       batch_size=128, crop_padding=8, flip=True, jitter=0.2),
        "softmax": dict(epochs=20, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="step", step_epochs=7,
                        step_gamma=0.3),
        "devise": dict(epochs=10, loss="hinge", margin=0.1, optimizer="adam", lr=1e-4, weight_decay=0.0,
                       schedule="step", step_epochs=4, step_gamma=0.3),
        "unseen": 20, "vocabulary": "target,train",
    },
    "pretrained": {  # both heads on a frozen ImageNet body (the packaged EfficientNet-Lite0), its features cached
        "common": dict(data="tiny-imagenet", body="efficientnet-lite0", pretrained=True, image_size=128, dropout=0.2,
                       batch_size=256, crop_padding=0, flip=False),
        "softmax": dict(epochs=10, freeze_epochs=10, optimizer="adam", lr=1e-3, weight_decay=5e-5,
                        schedule="cosine", label_smoothing=0.1),
        "devise": UNSEEN_STAGE,
        "unseen": 20, "vocabulary": "target",
    },
    "demo": {  # the generated toy set, in well under a minute
        "common": dict(data="toy", image_size=32, body="cnn", width=16, hidden=64, dropout=0.1, batch_size=32,
                       crop_padding=2, flip=True, bf16=False),
        "softmax": dict(epochs=5, optimizer="adam", lr=3e-3, weight_decay=0.0, schedule="cosine"),
        "devise": dict(epochs=4, freeze_epochs=1, loss="rank", margin=0.1, optimizer="adam", lr=3e-3,
                       weight_decay=0.0, schedule="cosine"),
        "unseen": 8, "vocabulary": "target,train",
    },
}


def preset_settings(preset: str, head: str) -> dict:
    """A preset's training settings for one head ("softmax" or "embedding"), as TrainConfig fields;
    also what `devise train --preset NAME` starts from. `preset` must be a key of `PRESETS`."""
    settings = PRESETS[preset]
    return dict(settings["common"], **settings["devise" if head == "embedding" else "softmax"], head=head)
