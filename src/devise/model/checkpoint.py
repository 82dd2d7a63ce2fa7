"""A run folder read back as a model: its settings (`config.toml`) and its last checkpoint
(`checkpoint.pt`, plain tensors loaded with `weights_only=True`). The training loop writes the run
folder (`devise.training.runs`); everything that uses a trained run reads it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from devise.config import TrainConfig, config_from, read_settings
from devise.data.preprocess import Preprocess
from devise.errors import DeviseError
from devise.hardware import resolve_device
from devise.labels.run_labels import label_space_for
from devise.model.network import VisualNet, build_network

CONFIG, CHECKPOINT = "config.toml", "checkpoint.pt"


@dataclass
class Run:
    """A run folder's model with what it was trained with: its settings, its input pipeline, its
    classes, their label vectors and centre, and what its body has seen."""

    config: TrainConfig
    model: VisualNet
    preprocess: Preprocess
    class_names: list[str]
    folder: Path
    label_vectors: torch.Tensor | None = None  # the training labels' unit vectors (embedding runs)
    class_ids: list[str] | None = None  # the training classes' ids (WordNet ids for Tiny ImageNet); older runs lack them
    label_centre: torch.Tensor | None = None  # what `--centre-labels` takes off every label vector
    body_trained_on: dict | None = None  # {"description", "ids"}: the classes the body saw (ids None: unknown)

    def label_space(self, replacements: str | None = None, vectors: str | None = None):
        """How this run reads any label: its label space with its training labels' vectors and
        centre (`devise.labels.spaces.label_space_for`); `vectors` names one for a softmax run."""
        known = dict(zip(self.class_names, self.label_vectors)) if self.label_vectors is not None else None
        return label_space_for(self.config, known, replacements, vectors, self.label_centre)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_config(folder: str | Path) -> TrainConfig:
    folder = Path(folder)
    if not folder.is_dir():
        raise DeviseError(f"{folder}: no such run folder")
    if not (folder / CONFIG).is_file():
        raise DeviseError(f"{folder} is not a run folder (no {CONFIG})")
    return config_from(read_settings(folder / CONFIG), str(folder / CONFIG))


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
    return (Path(folder) / CHECKPOINT).is_file()


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


def load_run(folder: str | Path, device: str | torch.device = "cpu") -> Run:
    """A run folder's model on `device`, ready to use (weights from its last checkpoint)."""
    folder = Path(folder)
    config = load_config(folder)
    state = load_checkpoint(folder)
    label_vectors = state.get("label_vectors")
    model = build_network(config, len(state["class_names"]), label_vectors).to(resolve_device(device))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise DeviseError(f"{folder / CHECKPOINT}: its weights do not fit the network its config.toml describes") from None
    model.eval()
    class_ids = list(state["class_ids"]) if "class_ids" in state else None
    return Run(config, model, checkpoint_preprocess(state), list(state["class_names"]), folder, label_vectors,
               class_ids, state.get("label_centre"), checkpoint_body_trained_on(state, class_ids))
