"""Evaluate trained runs: model outputs over a dataset, class scores, hit@k, metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from devise.data import BatchLoader, ImageSet
from devise.data.pipeline import NO_AUGMENT
from devise.hardware import autocast, inference_bf16
from devise.memory import freed_memory_kept
from devise.metrics import HIT_KS, chance_hit_at_k, hit_at_k
from devise.progress import progress_bar
from devise.train import Run, load_run, load_split


def model_outputs(run: Run, data: ImageSet, batch_size: int = 1000, progress: bool = True) -> torch.Tensor:
    """The model's raw outputs for every image (logits, or unit vectors for an embedding run), on
    the CPU, computed on the run's device in the precision `inference_bf16` chooses."""
    device = run.device
    bf16 = inference_bf16(run.config.bf16, device)
    loader = BatchLoader(data.to(device), batch_size, run.normalizer, augment=NO_AUGMENT)
    outputs = []
    run.model.eval()
    with freed_memory_kept(), torch.no_grad(), autocast(device, bf16):
        for images, _ in progress_bar(loader, progress, desc=f"evaluating {run.folder.name}", unit="batch"):
            outputs.append(run.model(images).float().cpu())
    return torch.cat(outputs)


def load_eval_data(run: Run, split: str | None = None, data_root: str | None = None, progress: bool = True) -> ImageSet:
    """The split a run is evaluated on, from the run's own dataset settings unless overridden."""
    return load_split(run.config, split or run.config.val_split, data_root, progress)


def evaluate_run(folder: str | Path, split: str | None = None, data_root: str | None = None,
                 progress: bool = True, device: str = "auto") -> dict:
    """hit@k (k = 1, 2, 3, 5, 10, 20) over the training classes, written to `metrics.json`.

    Softmax runs rank classes by probability, embedding runs by cosine similarity of the
    predicted vector to each class's label vector.
    """
    run = load_run(folder, device)
    data = load_eval_data(run, split, data_root, progress)
    scores = run.objective.class_scores(model_outputs(run, data, run.config.eval_batch_size, progress))
    result = {
        "run": str(run.folder), "head": run.config.head,
        "loss": getattr(run.objective, "loss_name", "cross-entropy"),
        "label_space": "random" if run.config.random_vectors else run.config.vectors,
        "split": split or run.config.val_split, "images": len(data), "classes": data.num_classes,
        **hit_at_k(scores, data.labels, HIT_KS),
        "chance": chance_hit_at_k(data.num_classes, HIT_KS),
    }
    (run.folder / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
