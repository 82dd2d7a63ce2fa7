"""Run settings: one flat dataclass whose fields carry their help, choices and range; the rules a
config must follow; TOML files of settings; the presets (TOML files in devise/presets).

Flat on purpose (nanoGPT style): a setting has one name in a TOML file, on the command line
(`--batch-size` for `batch_size`) and in a run folder's `config.toml`. This module imports nothing
else from devise but its errors: everything else reads its settings from here.
"""

from __future__ import annotations

import functools
import tomllib
import typing
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Literal

from devise.errors import DeviseError, read_text_file

# The choices of every setting that has a fixed set: the one list of each, read by `problems`, the
# command line and the code that acts on a setting (by name).
Dataset = Literal["tiny-imagenet", "cifar100", "folder", "toy"]
Head = Literal["softmax", "embedding"]
Loss = Literal["cosine", "hinge", "rank", "crossentropy"]
Optimizer = Literal["sgd", "adam"]
Schedule = Literal["onecycle", "cosine", "step", "constant"]
LabelSpace = Literal["glove-6b-50d", "word2vec-text", "word2vec-binary", "glove-text", "fasttext-vec", "minilm"]
LabelRule = Literal["first", "mean"]
OnBadImage = Literal["error", "skip"]
LogTo = Literal["csv", "tensorboard"]
DATASETS, HEADS, LOSSES = typing.get_args(Dataset), typing.get_args(Head), typing.get_args(Loss)
LABEL_SPACES, LABEL_RULES = typing.get_args(LabelSpace), typing.get_args(LabelRule)
OWN_BODIES = ("cnn", "resnet9")  # devise's own networks (devise.model.network); timm's are "timm:NAME"
PRETRAINED_BODIES = ("efficientnet-lite0",)  # weights devise loads by name (devise.model.pretrained)
PROMPT_SETS = ("default", "hypernym")  # built-in prompt templates (devise.labels.prompts)
DEFAULT_RULE = "mean"


def setting(default, help: str, *, low=None, high=None, low_ok: bool = True, high_ok: bool = True, path: bool = False):
    """A `TrainConfig` field: its default, its help text, its range (`low`/`high`, each allowed
    or not; None: no bound) and whether it names a file or folder."""
    return field(default=default, metadata={"help": help, "range": (low, high, low_ok, high_ok) if
                                            low is not None or high is not None else None, "path": path})


@dataclass
class TrainConfig:
    # data
    data: Dataset = setting("tiny-imagenet", "the dataset")
    data_root: str | None = setting(None, "the dataset's zip or folder; unset: the cache (or --download)", path=True)
    cache_dir: str | None = setting(None, "where decoded datasets and features are kept (default ~/.cache/devise)",
                                    path=True)
    download: bool = setting(False, "fetch the dataset when it is not on disk")
    val_split: str = setting("val", "the split validated on after each epoch")
    val_share: float = setting(0.1, "a folder dataset without val/: validate on this seeded share of each class's "
                                    "images", low=0, high=1, low_ok=False, high_ok=False)
    image_size: int = setting(0, "pixels the network sees; 0: the body's own (32 for cnn and resnet9, the weights' "
                                 "input size for a timm body)", low=0, high=1024)
    train_limit: int = setting(0, "use only the first N training images (0: all); for quick trials", low=0)
    unseen: int = setting(0, "hold this many classes (a seeded draw) out of training, for zero-shot tests", low=0)
    unseen_seed: int = setting(0, "the seed of that draw", low=0)
    # model
    head: Head = setting("softmax", "softmax (class logits) or embedding (DeViSE: a vector in the label space)")
    body: str = setting("resnet9", "the visual network: cnn (plain, the paper's style), resnet9, efficientnet-lite0, "
                                   "or timm:NAME (any timm architecture)")
    pretrained: bool = setting(False, "start a timm body from pretrained weights (efficientnet-lite0: packaged; "
                                      "timm:NAME: timm's own, from the hub or --pretrained-file)")
    pretrained_file: str | None = setting(None, "a local weights file for --pretrained on a timm:NAME body, read by "
                                                "timm's own loader", path=True)
    width: int = setting(32, "channels of the first conv block (x2, x4, x8 later)", low=1, high=1024)
    stem_pool: bool = setting(False, "resnet9: max-pool after the first conv, so 64 px images cost what 32 px ones do")
    hidden: int = setting(512, "units of the fully connected layer before the head", low=1)
    dropout: float = setting(0.4, "dropout between the convolutions and the FC layer, and before the head",
                             low=0, high=1, high_ok=False)
    # embedding head (DeViSE)
    loss: Loss = setting("hinge", "cosine, hinge (one random wrong label), rank (all wrong labels) or crossentropy")
    margin: float = setting(0.1, "margin of the hinge and rank losses", low=0)
    temperature: float = setting(0.05, "the crossentropy loss divides the cosines by it", low=0, low_ok=False)
    vectors: LabelSpace = setting("glove-6b-50d", "label space: glove-6b-50d, minilm, or a file format with "
                                                  "--vectors-path")
    vectors_path: str | None = setting(None, "the vectors file for word2vec-text, word2vec-binary, glove-text, "
                                             "fasttext-vec", path=True)
    label_rule: LabelRule = setting(DEFAULT_RULE, "synonym lists: the first usable synonym, or the mean of all usable")
    prompts: str | None = setting(None, "sentence label spaces: default (templates like 'a photo of a {}.'), "
                                        "hypernym (each naming the label's WordNet parent) or a file of templates; "
                                        "a label is their mean", path=True)
    replacements: str | None = setting(None, "file of 'label<TAB>words' lines for labels the vectors do not know",
                                       path=True)
    random_vectors: bool = setting(False, "control: random unit label vectors of the same size")
    centre_labels: bool = setting(False, "take the mean of the training labels' vectors off every label vector, so "
                                         "the direction all labels share stops counting in their cosines")
    embed_hidden: int = setting(0, "0: one linear layer to the label space (the paper); N: an MLP with N units", low=0)
    init: str | None = setting(None, "a softmax run folder to warm-start the body from", path=True)
    freeze_epochs: int = setting(0, "keep the warm-started or pretrained body frozen for this many epochs", low=0)
    distill: float = setting(0.0, "weight of the --init softmax run's probabilities in the targets (crossentropy "
                                  "loss)", low=0, high=1)
    distill_temperature: float = setting(1.0, "the teacher's logits are divided by it first: above 1 spreads its "
                                              "probabilities", low=0, low_ok=False)
    # optimisation
    epochs: int = setting(10, "passes over the training set", low=1)
    epoch_images: int = setting(0, "train on this many images an epoch, a fresh draw each time (0: all); set by "
                                   "--budget", low=0)
    val_images: int = setting(0, "validate each epoch on this many evenly spaced images (0: all); set by --budget",
                              low=0)
    batch_size: int = setting(256, "images a step, over all processes", low=1)
    optimizer: Optimizer = setting("sgd", "sgd (Nesterov momentum) or adam")
    lr: float = setting(0.2, "the peak learning rate", low=0, low_ok=False)
    momentum: float = setting(0.9, "SGD's momentum", low=0, high=1, high_ok=False)
    weight_decay: float = setting(5e-4, "on weights, not on biases and normalisation", low=0)
    schedule: Schedule = setting("onecycle", "the rate over training: onecycle, cosine, step or constant")
    warmup: float = setting(0.25, "share of training spent warming up (onecycle)", low=0, high=1, high_ok=False)
    step_epochs: int = setting(5, "step schedule: multiply the rate by --step-gamma every this many epochs", low=1)
    step_gamma: float = setting(0.1, "step schedule: the factor", low=0, high=1, low_ok=False)
    label_smoothing: float = setting(0.0, "softmax head: share of each target spread over the other classes",
                                     low=0, high=1, high_ok=False)
    small_epochs: int = setting(0, "progressive resizing: the first N epochs train on --small-size images", low=0)
    small_size: int = setting(0, "progressive resizing: their size in pixels (cheaper per image)", low=0)
    # augmentation
    crop_padding: int = setting(4, "random crops: pixels of reflect padding around the image (0: none)", low=0)
    flip: bool = setting(True, "random horizontal flips (a frozen timm body: its features of flipped images too)")
    jitter: float = setting(0.0, "random brightness, contrast and saturation, this strong (0: none)", low=0, high=1)
    # machinery
    seed: int = setting(0, "of initialisation, batch order, augmentation and dropout", low=0)
    bf16: bool | None = setting(None, "bfloat16 autocast; unset: where the device computes bf16 natively (recorded)")
    channels_last: bool = setting(True, "the memory layout oneDNN and cuDNN convolutions prefer")
    threads: int = setting(0, "torch threads; 0: torch's default", low=0)
    eval_batch_size: int = setting(1000, "images a batch when validating and evaluating", low=1)
    on_bad_image: OnBadImage = setting("error", "an image that does not decode: stop with its name (error), or leave "
                                                "it out (skip)")
    log_to: LogTo = setting("csv", "where each epoch's figures go besides the log: csv (metrics.csv and curves.png) "
                                   "or tensorboard (those, and TensorBoard scalars in RUN/tensorboard/; needs the "
                                   "tensorboard extra)")
    out: str = setting("runs/latest", "the run folder")

    def to_dict(self) -> dict:
        """The settings that are set (unset ones are left out, as TOML has no null)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


# ---------------------------------------------------------------------------------------------
# What each field says about itself


@functools.cache
def setting_types() -> dict[str, object]:
    """Each field's type, resolved (the `Literal` of a choice setting among them)."""
    return typing.get_type_hints(TrainConfig)


def settings() -> tuple[Field, ...]:
    return fields(TrainConfig)


def help_of(item: Field) -> str:
    return item.metadata["help"]


def choices_of(name: str) -> tuple | None:
    """The allowed values of a choice setting (its `Literal`), else None."""
    kind = setting_types()[name]
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else None


def value_type(name: str) -> type:
    """The plain type of a setting's values: int, float, str or bool (None aside)."""
    kind = setting_types()[name]
    if typing.get_origin(kind) is Literal:
        return str
    plain = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
    return plain[0]


def default_of(item: Field):
    return None if item.default is MISSING else item.default


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


PATH_SETTINGS = tuple(item.name for item in fields(TrainConfig) if item.metadata["path"])


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


def is_body(name: str) -> bool:
    """A body name devise can build: its own, a pretrained one it knows, or timm:NAME."""
    return isinstance(name, str) and (name in OWN_BODIES or name in PRETRAINED_BODIES
                                      or (name.startswith("timm:") and len(name) > len("timm:")))


def own_body(config: TrainConfig) -> bool:
    """Whether the run's body is one of devise's own networks (not a timm one)."""
    return config.body in OWN_BODIES


# ---------------------------------------------------------------------------------------------
# Settings from TOML files


def read_settings(path: str | Path) -> dict:
    """A TOML file of settings as a dict; errors name the file."""
    text = read_text_file(path, "config file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise DeviseError(f"{path}: not valid TOML ({error})") from None


def config_from(values: dict, source: str = "settings") -> TrainConfig:
    """A `TrainConfig` from settings by name, refusing names it does not know and values of the
    wrong type. A run folder written before bodies from timm names its body "model"."""
    values = dict(values)
    if "model" in values and "body" not in values:
        values["body"] = values.pop("model")
    unknown = sorted(set(values) - {item.name for item in settings()})
    if unknown:
        raise DeviseError(f"{source}: unknown setting(s) {', '.join(unknown)}")
    wrong = type_problems(values)
    if wrong:
        raise DeviseError(f"{source}: {wrong[0]}")
    return TrainConfig(**values)


def merged(*layers: dict) -> dict:
    """Settings laid over each other, later layers winning: defaults <- preset <- file <- flags."""
    values: dict = {}
    for layer in layers:
        values.update(layer)
    return values


# ---------------------------------------------------------------------------------------------
# The rules

TYPE_WORDS = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}


def type_problems(values: dict) -> list[str]:
    """Settings whose value is not of the field's type (from a TOML file, say: epochs = "ten")."""
    found = []
    for name, value in values.items():
        if name not in setting_types() or value is None:
            continue
        kind = value_type(name)
        accepted = (int, float) if kind is float else kind
        if not isinstance(value, accepted) or (isinstance(value, bool) and kind in (int, float)):
            found.append(f"{flag(name)} must be {TYPE_WORDS[kind]}, not {value!r}")
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
    for item in settings():
        value, allowed, bounds = getattr(config, item.name), choices_of(item.name), item.metadata["range"]
        if allowed is not None and value not in allowed:
            found.append(f"{flag(item.name)} must be one of {', '.join(allowed)}, not {value!r}")
        if bounds is not None and outside(value, *bounds):
            found.append(f"{flag(item.name)} must be {range_text(*bounds)}, not {value!r}")
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
# Presets: TOML files shipped in devise/presets, the settings of `devise reproduce` (and of
# `devise train --preset NAME`): [common], [softmax] and [devise] settings, and `unseen` and the
# zero-shot `vocabulary`.


@functools.cache
def presets() -> dict[str, dict]:
    """Every preset by name, as its file holds it."""
    folder = resources.files("devise") / "presets"
    return {entry.name.removesuffix(".toml"): tomllib.loads(entry.read_text(encoding="utf-8"))
            for entry in sorted(folder.iterdir(), key=lambda e: e.name) if entry.name.endswith(".toml")}


def preset_file(name: str) -> dict:
    """One preset, or one line naming the presets there are."""
    known = presets()
    if name not in known:
        raise DeviseError(f"unknown preset {name!r}; choose one of {', '.join(known)}")
    return known[name]


def preset_settings(name: str, head: str) -> dict:
    """A preset's training settings for one head ("softmax" or "embedding"), as TrainConfig fields;
    also what `devise train --preset NAME` starts from."""
    chosen = preset_file(name)
    return dict(chosen["common"], **chosen["devise" if head == "embedding" else "softmax"], head=head)


def settings_markdown() -> str:
    """docs/settings.md: every setting with its default, choices, range and help, as the command
    line shows them (tools/settings_doc.py writes it; a test keeps it true)."""
    lines = ["# Settings", "", "Every training setting, as `devise train --help`, a TOML file (`--config`) and a run "
             "folder's `config.toml` take it. Written from `devise.config.TrainConfig` by "
             "`python tools/settings_doc.py`.", "", "| setting | default | allowed | what it does |", "|---|---|---|---|"]
    for item in settings():
        allowed = choices_of(item.name)
        bounds = item.metadata["range"]
        text = ", ".join(allowed) if allowed else (range_text(*bounds) if bounds else "")
        default = default_of(item)
        lines.append(f"| `{flag(item.name)}` | {'' if default is None else f'`{default}`'} | {text} | "
                     f"{help_of(item).replace('|', '/')} |")
    return "\n".join(lines) + "\n"
