"""Run settings as one flat dataclass: from defaults, a TOML file, and command-line flags.

Flat on purpose (nanoGPT style): every setting is one name, the same in the TOML file, on the
command line (`--batch-size` for `batch_size`) and in the run folder's saved `config.toml`.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import tomli_w

from devise.data.pipeline import Augment
from devise.errors import DeviseError
from devise.models import ModelSpec
from devise.vectors import DEFAULT_RULE, RULES, SOURCES


@dataclass
class TrainConfig:
    # data
    data: str = "tiny-imagenet"  # tiny-imagenet, cifar100, folder or toy
    data_root: str | None = None  # zip, folder, ...; none: the cache (or --download)
    cache_dir: str | None = None  # where decoded datasets are kept; default ~/.cache/devise
    download: bool = False  # fetch the dataset when it is not on disk
    val_split: str = "val"
    image_size: int = 32  # pixels; Tiny ImageNet's 64 px images are downsampled once at load
    train_limit: int = 0  # use only the first N training images (0: all); for quick trials
    unseen: int = 0  # hold out this many classes (seeded draw) from training, for zero-shot tests
    unseen_seed: int = 0
    # model
    head: str = "softmax"  # softmax (class logits) or embedding (DeViSE)
    model: str = "resnet9"  # cnn (plain, the paper's style) or resnet9
    width: int = 32  # channels of the first conv block (x2, x4, x8 later); 32 suits a 2-core CPU
    stem_pool: bool = False  # resnet9: max-pool after the first conv, so 64 px images cost what 32 px ones do
    hidden: int = 512
    dropout: float = 0.4
    # embedding head (DeViSE)
    loss: str = "hinge"  # cosine, hinge (one random wrong label), rank (all wrong labels) or crossentropy
    margin: float = 0.1  # of the hinge and rank losses
    temperature: float = 0.05  # of the crossentropy loss: cosines are divided by it
    vectors: str = "glove-6b-50d"  # label space: glove-6b-50d, minilm, or a file format with --vectors-path
    vectors_path: str | None = None
    label_rule: str = DEFAULT_RULE  # synonym lists: "first" usable synonym or "mean" of all usable
    replacements: str | None = None  # file mapping labels without vectors to other words
    random_vectors: bool = False  # control: random unit label vectors of the same size
    embed_hidden: int = 0  # 0: one linear layer to the embedding (the paper); N: an MLP with N units
    init: str | None = None  # a softmax run folder to warm-start the body from
    init_epoch: int = 0  # warm-start from the --init run's weights after this epoch (its snapshot); 0: its last
    snapshot_epoch: int = 0  # also keep this epoch's weights (checkpoint-epochN.pt) for a later --init-epoch
    freeze_epochs: int = 0  # keep the warm-started body frozen for this many epochs
    phase_schedules: bool = False  # the frozen epochs, then the rest, each run the whole rate schedule
    body_lr_scale: float = 1.0  # the body learns at this fraction of --lr (gentle fine-tuning of a warm start)
    distill: float = 0.0  # weight of the --init softmax run's probabilities in the targets (crossentropy loss)
    distill_temperature: float = 1.0  # the teacher's logits are divided by it first: above 1 spreads its probabilities
    # optimisation
    epochs: int = 10
    epoch_images: int = 0  # train on this many images an epoch, a fresh draw each time (0: all); set by --budget
    val_images: int = 0  # validate each epoch on this many evenly spaced images (0: all); set by --budget
    batch_size: int = 256
    optimizer: str = "sgd"  # sgd (Nesterov momentum) or adam
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle, cosine, step or constant
    warmup: float = 0.25  # fraction of training spent warming up (onecycle)
    step_epochs: int = 5  # step schedule: multiply the rate by step_gamma every this many epochs
    step_gamma: float = 0.1
    label_smoothing: float = 0.0
    small_epochs: int = 0  # progressive resizing: the first N epochs train on --small-size images
    small_size: int = 0  # ... this many pixels square (cheaper per image); 0: off
    # augmentation
    crop_padding: int = 4
    flip: bool = True
    jitter: float = 0.0
    # machinery
    seed: int = 0
    bf16: bool | None = None  # bfloat16 autocast; unset: where the device computes bf16 natively (recorded)
    channels_last: bool = True
    threads: int = 0  # torch threads; 0: torch's default
    eval_batch_size: int = 1000
    out: str = "runs/latest"

    @property
    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.model, self.width, self.hidden, self.dropout, self.stem_pool)

    @property
    def augment(self) -> Augment:
        return Augment(self.crop_padding, self.flip, self.jitter)

    @property
    def small_augment(self) -> Augment:
        """The augmentation of the small-image epochs, its crop padding scaled down with the images."""
        return Augment(round(self.crop_padding * self.small_size / self.image_size), self.flip, self.jitter)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def save(self, path: Path) -> None:
        path.write_text(tomli_w.dumps(self.to_dict()))

    @classmethod
    def from_dict(cls, values: dict, source: str = "settings") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DeviseError(f"{source}: unknown setting(s) {', '.join(unknown)}")
        return cls(**values)


def read_toml(path: str | Path) -> dict:
    """A TOML file's settings as a dict; errors name the file."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise DeviseError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as error:
        raise DeviseError(f"{path}: not valid TOML ({error})") from None


def validate(config: TrainConfig) -> None:
    """Reject settings that cannot work before any data is loaded."""
    from devise.losses import LOSSES

    choices = {"head": ("softmax", "embedding"), "optimizer": ("sgd", "adam"),
               "schedule": ("onecycle", "cosine", "step", "constant"), "loss": tuple(LOSSES),
               "vectors": SOURCES, "label_rule": RULES}
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise DeviseError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, not {getattr(config, name)!r}")
    for name in ("epochs", "batch_size", "image_size", "width", "hidden"):
        if getattr(config, name) <= 0:
            raise DeviseError(f"--{name.replace('_', '-')} must be positive")
    if config.epoch_images and config.epoch_images < config.batch_size:
        raise DeviseError("--epoch-images must be 0 (all) or at least --batch-size")
    if config.val_images < 0:
        raise DeviseError("--val-images must be 0 (all) or positive")
    if not 0 <= config.dropout < 1:
        raise DeviseError("--dropout must be in [0, 1)")
    if config.lr <= 0:
        raise DeviseError("--lr must be positive")
    if config.body_lr_scale < 0:
        raise DeviseError("--body-lr-scale must be zero or positive")
    if config.small_epochs and not 0 < config.small_size < config.image_size:
        raise DeviseError("--small-epochs needs --small-size between 0 and --image-size")
    if config.temperature <= 0:
        raise DeviseError("--temperature must be positive")
    if not 0 <= config.distill <= 1:
        raise DeviseError("--distill must be in [0, 1]")
    if config.distill_temperature <= 0:
        raise DeviseError("--distill-temperature must be positive")
    if config.distill and not (config.head == "embedding" and config.loss == "crossentropy" and config.init):
        raise DeviseError("--distill needs --head embedding, --loss crossentropy and --init RUN (the softmax teacher)")
    if config.init_epoch and not config.init:
        raise DeviseError("--init-epoch needs --init RUN (the run whose snapshot to start from)")
    if not 0 <= config.snapshot_epoch <= config.epochs or config.init_epoch < 0:
        raise DeviseError("--snapshot-epoch must be between 0 and --epochs, and --init-epoch not negative")
    if config.freeze_epochs and not config.init:
        raise DeviseError("--freeze-epochs needs --init RUN (a trained body to keep frozen)")
    if config.phase_schedules and not 0 < config.freeze_epochs < config.epochs:
        raise DeviseError("--phase-schedules needs --freeze-epochs between 0 and --epochs (two phases)")
