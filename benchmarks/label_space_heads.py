"""Does the label space cap DeViSE's hit@k? Heads trained on one softmax run's frozen features.

The body of a trained softmax run turns every image into a feature vector once (no
augmentation). Then small heads are trained on those same features for the same number of
epochs: a new softmax layer (the baseline), and DeViSE heads (an MLP to a label space, scored by
cosine to every label vector, trained with the crossentropy loss at temperature 0.05) in the
50-d GloVe space and in the 384-d MiniLM space (there also at temperature 0.02, and with the
label vectors centred). With the features fixed, any gap between a DeViSE head and the softmax
layer is the label space's doing, not the body's.
Prints one JSON line per head with hit@1/5/10 on the validation split.
Usage: python benchmarks/label_space_heads.py SOFTMAX_RUN [--epochs 15]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from devise.evaluation.metrics import hit_at_k
from devise.hardware import autocast, inference_bf16
from devise.labels.run_labels import training_label_vectors
from devise.model.checkpoint import load_run
from devise.model.inference import dataset_features
from devise.training.runs import run_split


def frozen_features(run, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features, labels, the run's own logits) for every image of a split: the body's outputs,
    computed as `devise evaluate` computes a model's, then the run's head on them."""
    data = run_split(run.config, run.folder, split, progress=False)
    bf16 = inference_bf16(run.config.bf16, run.device)
    features = dataset_features(run.model, run.preprocess, data, device=run.device, bf16=bf16, progress=False)
    with torch.no_grad(), autocast(run.device, bf16):
        logits = run.model.head(features).float()
    return features, data.labels.clone(), logits


def fit_head(train: tuple, label_vectors: torch.Tensor | None, num_classes: int, epochs: int,
             temperature: float = 0.05, hidden: int = 512, label_smoothing: float = 0.0):
    """A head trained with Adam and a one-cycle rate; returns a function from features to class
    scores: logits for the softmax layer, cosines over temperature for a label space."""
    features, labels = train
    torch.manual_seed(0)
    if label_vectors is None:
        head = nn.Sequential(nn.Dropout(0.2), nn.Linear(features.shape[1], num_classes))
    else:
        head = nn.Sequential(nn.Dropout(0.2), nn.Linear(features.shape[1], hidden), nn.ReLU(), nn.Dropout(0.2),
                             nn.Linear(hidden, label_vectors.shape[1]))

    def scores(x: torch.Tensor) -> torch.Tensor:
        out = head(x)
        return out if label_vectors is None else F.normalize(out, dim=1) @ label_vectors.T / temperature

    batch = 256
    optimizer = torch.optim.Adam(head.parameters(), 1e-3, weight_decay=5e-5)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=epochs * (len(features) // batch))
    for _ in range(epochs):
        head.train()
        order = torch.randperm(len(features))
        for start in range(0, len(features) - batch + 1, batch):
            rows = order[start : start + batch]
            loss = F.cross_entropy(scores(features[rows]), labels[rows], label_smoothing=label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    head.eval()
    return scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("softmax_run")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()

    run = load_run(args.softmax_run)
    train_features, train_labels, _ = frozen_features(run, "train")
    val_features, val_labels, val_logits = frozen_features(run, run.config.val_split)
    classes = len(run.class_names)

    def report(head: str, scores: torch.Tensor, seconds: float) -> None:
        hits = hit_at_k(scores, val_labels, (1, 5, 10))
        print(json.dumps({"benchmark": "label_space_heads", "run": args.softmax_run, "head": head,
                          **{k: round(v, 3) for k, v in hits.items()}, "seconds": round(seconds, 1)}), flush=True)

    report("the run's own softmax layer", val_logits, 0.0)
    heads = [("softmax layer, label smoothing 0.1", None, False, dict(label_smoothing=0.1)),
             ("DeViSE MLP, glove-6b-50d", "glove-6b-50d", False, {}),
             ("DeViSE MLP, glove-6b-50d, temperature 0.02", "glove-6b-50d", False, dict(temperature=0.02)),
             ("DeViSE MLP, minilm", "minilm", False, {}),
             ("DeViSE MLP, minilm, temperature 0.02", "minilm", False, dict(temperature=0.02)),
             ("DeViSE MLP, minilm, centred label vectors", "minilm", True, {})]
    for name, space, centred, options in heads:
        settings = replace(run.config, vectors=space, centre_labels=centred)  # centred: the labels' mean direction off
        vectors = None if space is None else training_label_vectors(settings, run.class_names)[0].float()
        started = time.perf_counter()
        scores = fit_head((train_features, train_labels), vectors, classes, args.epochs, **options)
        with torch.no_grad():
            report(name, scores(val_features), time.perf_counter() - started)


if __name__ == "__main__":
    main()
