"""The run folder: the only module that writes or reads its files.

    RUN/config.toml        the settings (`TrainConfig`), as used
    RUN/checkpoint.pt      weights, optimiser state, epoch, class names, normaliser, label vectors
    RUN/metrics.csv        one row per epoch
    RUN/summary.json       the final figures and the host
    RUN/unseen.json        the classes held out of training (`--unseen K`), ids and names
    RUN/metrics.json       hit@k of `devise evaluate`
    RUN/zeroshot-TARGET/   `devise zeroshot`: zeroshot.json and its figures
    RUN/curves.png, RUN/skipped-images.txt, RUN/.devise-lock (while a writer holds the folder)

One writer at a time (`held`): a second one gets one line naming the holder. `load_run` turns a
folder back into a model ready to use, on any device.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import socket
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import tomli_w
import torch

from devise.config import TrainConfig, own_body, type_problems, unknown_settings
from devise.data import ImageSet, Preprocess, load_dataset
from devise.data.splits import keep_classes, seen_classes
from devise.errors import DeviseError, RunFailed, read_text_file
from devise.hardware import resolve_device
from devise.model.network import EmbeddingHead, ModelSpec, VisualNet, create_model
from devise.training.objectives import EmbeddingObjective, SoftmaxObjective, objective_for
from devise.model.pretrained import data_config, timm_architecture

CONFIG, CHECKPOINT, METRICS, SUMMARY, UNSEEN, EVALUATION = (
    "config.toml", "checkpoint.pt", "metrics.csv", "summary.json", "unseen.json", "metrics.json")
ZERO_SHOT, CURVES, SKIPPED, HOLDER = "zeroshot.json", "curves.png", "skipped-images.txt", ".devise-lock"
CALIBRATION = "calibration.json"
DEVISE_FILES = {CONFIG, CHECKPOINT, METRICS, SUMMARY, UNSEEN, EVALUATION, CURVES, SKIPPED, HOLDER, CALIBRATION}
METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5",
                 "epoch_seconds", "images_per_second"]
# Settings earlier versions wrote into config.toml: harmless at these values, gone since.
RETIRED = {"init_epoch": 0, "snapshot_epoch": 0, "phase_schedules": False, "body_lr_scale": 1.0}


@dataclass
class Run:
    """A trained (or training) model with what is needed to use it."""

    config: TrainConfig
    model: VisualNet
    preprocess: Preprocess
    class_names: list[str]
    objective: SoftmaxObjective | EmbeddingObjective
    folder: Path
    label_vectors: torch.Tensor | None = None  # the training labels' unit vectors (embedding runs)
    class_ids: list[str] | None = None  # the training classes' ids (WordNet ids for Tiny ImageNet); older runs lack them
    label_centre: torch.Tensor | None = None  # what `--centre-labels` takes off every label vector
    body_trained_on: dict | None = None  # {"description", "ids"}: the classes the body saw (ids None: unknown)

    def label_space(self, replacements: str | None = None, vectors: str | None = None):
        """How this run reads any label: its label space with its training labels' vectors and
        centre (`devise.labels.spaces.label_space_for`); `vectors` names one for a softmax run."""
        from devise.labels.run_labels import label_space_for

        known = dict(zip(self.class_names, self.label_vectors)) if self.label_vectors is not None else None
        return label_space_for(self.config, known, replacements, vectors, self.label_centre)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


# ---------------------------------------------------------------------------------------------
# One writer at a time


@contextlib.contextmanager
def held(folder: str | Path, what: str) -> Iterator[Path]:
    """Hold `folder` for the life of the block: an exclusive lock on the folder itself (released
    by the system if the process dies), and while it is held a file naming the holder. A second
    writer gets one line naming the holder. A folder made here and left empty is removed again."""
    folder = Path(folder)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock on this system: one writer by convention only
        yield folder
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = folder / HOLDER
            who = holder.read_text(errors="replace").strip() if holder.is_file() else "another process"
            raise RunFailed(f"{folder} is in use by {who}; wait for it to finish or choose another folder") from None
        (folder / HOLDER).write_text(f"devise {what} (pid {os.getpid()} on {socket.gethostname()}, "
                                     f"since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        try:
            yield folder
        finally:
            (folder / HOLDER).unlink(missing_ok=True)
            if made and not any(folder.iterdir()):
                folder.rmdir()
    finally:
        os.close(handle)


def foreign_files(folder: Path) -> list[str]:
    """Names in a would-be run folder that devise did not write (a user's own files). The folder
    is listed once: under torchrun another process may be writing into it meanwhile."""
    if not folder.is_dir():
        return []
    return sorted(name for name in os.listdir(folder)
                  if not (name in DEVISE_FILES or name.endswith(".tmp")
                          or (name.startswith("zeroshot-") and (folder / name).is_dir())))


# ---------------------------------------------------------------------------------------------
# Settings


def read_settings(path: str | Path) -> dict:
    """A TOML file of settings as a dict; errors name the file."""
    text = read_text_file(path, "config file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise DeviseError(f"{path}: not valid TOML ({error})") from None


def config_from(values: dict, source: str = "settings") -> TrainConfig:
    """A `TrainConfig` from settings by name, refusing names it does not know."""
    values = dict(values)
    if "model" in values and "body" not in values:  # runs written before bodies from timm
        values["body"] = values.pop("model")
    for name, neutral in RETIRED.items():
        if name in values and values.pop(name) != neutral:
            raise DeviseError(f"{source}: setting {name} is no longer supported")
    unknown = unknown_settings(values)
    if unknown:
        raise DeviseError(f"{source}: unknown setting(s) {', '.join(unknown)}")
    wrong = type_problems(values)
    if wrong:
        raise DeviseError(f"{source}: {wrong[0]}")
    return TrainConfig.from_dict(values)


def save_config(folder: Path, config: TrainConfig) -> None:
    (folder / CONFIG).write_text(tomli_w.dumps(config.to_dict()))


def load_config(folder: str | Path) -> TrainConfig:
    folder = Path(folder)
    if not folder.is_dir():
        raise DeviseError(f"{folder}: no such run folder")
    if not (folder / CONFIG).is_file():
        raise DeviseError(f"{folder} is not a run folder (no {CONFIG})")
    return config_from(read_settings(folder / CONFIG), str(folder / CONFIG))


# ---------------------------------------------------------------------------------------------
# Checkpoint, metrics, summary


def save_checkpoint(folder: Path, state: dict) -> None:
    """Write to a temporary file and rename, so a crash never leaves a half-written checkpoint."""
    path = folder / CHECKPOINT
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(folder: Path) -> dict:
    """Plain tensors and containers only (`weights_only=True`): loading runs no code."""
    path = Path(folder) / CHECKPOINT
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DeviseError(f"{path}: no checkpoint (has this run trained for an epoch?)") from None
    except Exception as error:  # a corrupt or foreign file; the user needs one line
        raise DeviseError(f"{path} is not a devise checkpoint ({error.__class__.__name__})") from None
    missing = [key for key in ("model", "optimizer", "epoch", "class_names", "normalizer")
               if not isinstance(state, dict) or key not in state]
    if missing:
        raise DeviseError(f"{path} is not a devise checkpoint (no {missing[0]!r} in it)")
    return state


def has_checkpoint(folder: Path) -> bool:
    return (folder / CHECKPOINT).is_file()


def read_metrics(folder: Path) -> list[dict]:
    """The per-epoch rows of `metrics.csv` (none when the run has not finished an epoch)."""
    path = Path(folder) / METRICS
    if not path.is_file():
        return []
    try:
        rows = list(csv.DictReader(read_text_file(path).splitlines()))
        parsed = [{k: float(row[k]) for k in METRIC_FIELDS} for row in rows]
    except (KeyError, ValueError, TypeError, csv.Error) as error:
        raise DeviseError(f"{path} is not a metrics file devise wrote ({error.__class__.__name__}: {error})") from None
    return parsed


def write_metrics(folder: Path, rows: list[dict]) -> None:
    path = folder / METRICS
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (int(row[k]) if k == "epoch" else round(row[k], 6)) for k in METRIC_FIELDS})
    os.replace(tmp, path)


def write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


# The keys each JSON file of a run folder must hold, to be taken as one devise wrote.
REQUIRED = {SUMMARY: ("epochs",), UNSEEN: ("ids", "names"), EVALUATION: ("hit@1", "chance"),
            ZERO_SHOT: ("target", "images", "target_classes", "label_space", "vocabulary", "models",
                        "control_similarity"), CALIBRATION: ("gamma", "method", "splits")}


def read_json(path: Path) -> dict | None:
    """A JSON file of a run folder (None when it is not there), checked for the keys devise writes."""
    if not path.is_file():
        return None
    try:
        content = json.loads(read_text_file(path))
    except ValueError as error:
        raise DeviseError(f"{path} is not valid JSON ({error})") from None
    missing = [key for key in REQUIRED.get(path.name, ()) if not isinstance(content, dict) or key not in content]
    if not isinstance(content, dict) or missing:
        raise DeviseError(f"{path} is not a file devise wrote (no {missing[0] if missing else 'object'!r} in it)")
    return content


def write_summary(folder: Path, summary: dict) -> None:
    write_json(Path(folder) / SUMMARY, summary)


def read_summary(folder: Path) -> dict | None:
    return read_json(Path(folder) / SUMMARY)


def write_evaluation(folder: Path, result: dict) -> None:
    write_json(Path(folder) / EVALUATION, result)


def read_evaluation(folder: Path) -> dict | None:
    return read_json(Path(folder) / EVALUATION)


def zero_shot_folder(run_folder: Path, target: str) -> Path:
    """Where `devise zeroshot` writes by default: inside the first run's folder."""
    return Path(run_folder) / f"zeroshot-{target}"


def write_zero_shot(folder: Path, results: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / ZERO_SHOT, results)


def read_zero_shot(folder: Path) -> dict | None:
    return read_json(Path(folder) / ZERO_SHOT)


def zero_shot_folders(run_folder: Path) -> list[Path]:
    """The zero-shot output folders inside a run folder."""
    return sorted(path.parent for path in Path(run_folder).glob(f"zeroshot-*/{ZERO_SHOT}"))


# ---------------------------------------------------------------------------------------------
# Held-out classes and the images a run sees


def write_skipped(folder: Path, names: list[str]) -> None:
    """List the images left out with --on-bad-image skip, one a line."""
    (folder / SKIPPED).write_text("".join(f"{name}\n" for name in names))


def write_unseen(folder: Path, ids: list[str], names: list[str]) -> None:
    """List the held-out classes in the run folder, so anyone can check none was trained on."""
    write_json(folder / UNSEEN, {"ids": ids, "names": names})


def write_calibration(folder: Path, calibration: dict) -> None:
    """Store the run's calibrated-stacking constant (`devise.training.calibration`) for `devise zeroshot`."""
    write_json(folder / CALIBRATION, calibration)


def read_calibration(folder: Path) -> dict | None:
    """The run's calibrated-stacking constant and how it was chosen, or None when it has none."""
    content = read_json(Path(folder) / CALIBRATION)
    if content is not None and not isinstance(content["gamma"], (int, float)):
        raise DeviseError(f"{Path(folder) / CALIBRATION} holds no numeric constant")
    return content


def read_unseen(folder: Path, config: TrainConfig) -> list[str]:
    """The ids of the classes the run held out of training (none without `--unseen`)."""
    if not config.unseen:
        return []
    path = Path(folder) / UNSEEN
    content = read_json(path)
    if content is None:
        raise DeviseError(f"{path} is missing: the run's held-out classes are unknown")
    ids = content["ids"]
    if not isinstance(ids, list) or len(ids) != config.unseen or not all(isinstance(i, str) for i in ids):
        raise DeviseError(f"{path} does not list the run's {config.unseen} held-out class ids")
    return ids


def seen_split(config: TrainConfig, split: str, unseen: list[str], data_root: str | None = None,
               progress: bool = True, image_size: int | None = None) -> ImageSet:
    """One split of a run's dataset as the run keeps it (`stored_size`; `image_size` for a smaller
    copy), the `unseen` classes removed."""
    data = load_dataset(config.data, data_root or config.data_root, split, image_size or stored_size(config),
                        config.cache_dir, config.download, progress, config.on_bad_image, config.val_share,
                        interpolation=stored_interpolation(config))
    return keep_classes(data, seen_classes(data, unseen)) if unseen else data


def run_split(run: Run, split: str | None = None, data_root: str | None = None, progress: bool = True) -> ImageSet:
    """The images of a trained run's classes in one split (default: its validation split)."""
    return seen_split(run.config, split or run.config.val_split, read_unseen(run.folder, run.config), data_root,
                      progress)


# ---------------------------------------------------------------------------------------------
# Image sizes and the input pipeline


def with_image_size(config: TrainConfig) -> TrainConfig:
    """`config` with its image size set: 0 means the body's own, 32 px for devise's networks and
    the input size of a timm body's weights."""
    if config.image_size:
        return config
    architecture = timm_architecture(config.body)
    return replace(config, image_size=data_config(architecture)["input_size"] if architecture else 32)


def stored_size(config: TrainConfig, data: str | None = None) -> int | None:
    """The size a run's dataset is kept at in memory. devise's own bodies: the run's image size,
    resized once when loaded. A timm body: the dataset's own size (Tiny ImageNet's 64 px), each
    batch then resized as the weights expect; a folder of photos is decoded at the size that
    resize goes to, so no detail is lost first. `data` names another dataset (a zero-shot target)."""
    if own_body(config):
        return config.image_size
    return input_pipeline(config).resize if (data or config.data) == "folder" else None


def stored_interpolation(config: TrainConfig) -> str:
    """How a run's photos are resized when decoded: as its input pipeline resizes."""
    return "bilinear" if own_body(config) else input_pipeline(config).interpolation


def input_pipeline(config: TrainConfig, images: torch.Tensor | None = None) -> Preprocess:
    """How a run's images become its network's input. devise's own bodies: each channel
    normalised by the training images' statistics (`images`). A timm body: its weights' own
    pipeline from timm's data config (interpolation, crop share, mean and standard deviation) at
    the run's image size."""
    architecture = timm_architecture(config.body)
    if architecture is None:
        return Preprocess.fit(images)
    cfg = data_config(architecture)
    return Preprocess(tuple(255 * m for m in cfg["mean"]), tuple(255 * s for s in cfg["std"]), config.image_size,
                      cfg["crop_pct"], cfg["interpolation"])


def cache_folder(config: TrainConfig) -> Path:
    """Where a run's derived data (decoded images, a frozen body's features) is cached."""
    from devise.data.cache import default_cache_dir

    return Path(config.cache_dir) if config.cache_dir else default_cache_dir()


def checkpoint_body_trained_on(state: dict, class_ids: list[str] | None) -> dict:
    """What a checkpoint's body was trained on (`devise.training.loop.body_trained_on`); a run written
    before this was recorded trained its own body from scratch on its own classes."""
    record = state.get("body_trained_on")
    if isinstance(record, dict) and "ids" in record:
        return {"description": str(record.get("description", "")),
                "ids": None if record["ids"] is None else [str(i) for i in record["ids"]]}
    ids = list(class_ids or state["class_names"])
    return {"description": f"its {len(ids)} training classes", "ids": ids}


def read_body_trained_on(folder: str | Path) -> dict:
    """What the body of the run in `folder` was trained on."""
    state = load_checkpoint(Path(folder))
    return checkpoint_body_trained_on(state, state.get("class_ids"))


def checkpoint_preprocess(state: dict) -> Preprocess:
    """A checkpoint's input pipeline; one written before pipelines were recorded holds a
    normaliser alone."""
    if "input" in state:
        return Preprocess.from_record(state["input"])
    mean, std = state["normalizer"]
    return Preprocess(tuple(mean), tuple(std))


# ---------------------------------------------------------------------------------------------
# A run as a model


def build_model(config: TrainConfig, num_classes: int, label_vectors: torch.Tensor | None,
                device: torch.device = torch.device("cpu"), pretrained: bool = False):
    """The network and its objective, on `device`: class logits, or unit vectors in the label space.
    With `pretrained`, a timm body starts from the weights the run names (a new run's start)."""
    model = create_model(ModelSpec.of(config), num_classes, pretrained, config.pretrained_file)
    if label_vectors is not None:
        model.head = EmbeddingHead(model.feature_dim, label_vectors.shape[1], config.embed_hidden or None)
        label_vectors = label_vectors.to(device)
    return model.to(device), objective_for(config, label_vectors)


def load_run(folder: str | Path, device: str | torch.device = "cpu") -> Run:
    """A run folder's model on `device`, ready to use (weights from its last checkpoint)."""
    folder = Path(folder)
    config = load_config(folder)
    state = load_checkpoint(folder)
    label_vectors = state.get("label_vectors")
    model, objective = build_model(config, len(state["class_names"]), label_vectors, resolve_device(device))
    model.load_state_dict(state["model"])
    model.eval()
    class_ids = list(state["class_ids"]) if "class_ids" in state else None
    return Run(config, model, checkpoint_preprocess(state), list(state["class_names"]), objective, folder,
               label_vectors, class_ids, state.get("label_centre"), checkpoint_body_trained_on(state, class_ids))


def load_pretrained_run(name: str, device: str | torch.device = "cpu", image_size: int | None = None,
                        vectors: str | None = None, prompts: str | None = None) -> Run:
    """A pretrained ImageNet classifier devise knows by name (`devise.model.pretrained.KNOWN`), as a
    softmax model over its 1,000 ImageNet-1K classes (WordNet ids and names): ConSE with no
    training, its labels read in `vectors` (default GloVe 6B 50-d; `prompts` for a sentence
    space). It runs at its weights' input size unless `image_size` says otherwise."""
    from devise.model.pretrained import KNOWN, imagenet_classes, imagenet_classifier_state

    weights = KNOWN[name]
    if image_size is not None and not 8 <= image_size <= 1024:
        raise DeviseError(f"--image-size must be in [8, 1024], not {image_size}")
    config = TrainConfig(head="softmax", body=name, pretrained=True, image_size=image_size or weights.input_size,
                         dropout=0.0, bf16=True, vectors=vectors or "glove-6b-50d", prompts=prompts)
    ids, names = imagenet_classes()
    model, objective = build_model(config, len(ids), None, resolve_device(device))
    model.load_state_dict(imagenet_classifier_state(name))
    model = model.to(memory_format=torch.channels_last).eval()
    return Run(config, model, input_pipeline(config), names, objective, Path(name), None, ids, None,
               {"description": weights.trained_on, "ids": ids})


def is_stock(run: Run) -> bool:
    """Whether `run` is a pretrained classifier loaded by name, not a run devise trained."""
    from devise.model.pretrained import is_pretrained_name

    folder = getattr(run, "folder", None)
    return folder is not None and is_pretrained_name(str(folder)) and not is_model_folder(folder)


def is_model_folder(path: str | Path) -> bool:
    """Whether `path` is a run folder or an exported model folder (which take precedence over a
    pretrained model's name)."""
    folder = Path(path).expanduser()
    return (folder / CONFIG).is_file() or (folder / "config.json").is_file()


def load_model_run(path: str | Path, device: str | torch.device = "cpu", vectors: str | None = None,
                   prompts: str | None = None, image_size: int | None = None) -> Run:
    """A run folder's model, or a pretrained classifier devise knows by name (`efficientnet-lite0`,
    its labels read in `vectors` with `prompts`, at `image_size`)."""
    from devise.model.pretrained import is_pretrained_name

    if is_pretrained_name(str(path)) and not is_model_folder(path):
        return load_pretrained_run(str(path), device, image_size, vectors=vectors, prompts=prompts)
    return load_run(path, device)
