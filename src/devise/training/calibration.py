"""Calibrated stacking's constant, chosen the way Chao et al. (2016) chose it: by holding seen
classes out of a model and finding the constant that best separates them from the rest.

Calibrated stacking takes one constant off every seen label's score before the top-1 over all
labels, so that a model trained on the seen classes alone can name an unseen one. The constant
must not be chosen by looking at unseen-class images. Chao et al. chose it by cross-validation
over classes: train without some seen classes (the pseudo-unseen), and take the constant that
gives the best harmonic mean H between those and the others. Choosing it instead so that a fixed
share of seen-class images is named unseen leaves H far from the best the S-U curve reaches
(docs/zero-shot.md).

Retraining a whole model per split is out of reach; its last layer alone is cheap to redo on the
body's features. Two models allow it:

- a DeViSE run whose body stayed frozen (the presets' DeViSE stage): its head is all it trained,
  so the splits redo exactly that. Its training ends here, and the constant is stored in the run
  folder for `devise zeroshot`;
- ConSE from a softmax run: its softmax layer is redone on its body's features. ConSE reads the
  softmax model's labels in whatever label space the models are compared in, so the constant
  belongs to that space and `devise zeroshot` chooses it there. The body saw the pseudo-unseen
  classes in training, which a model trained without them would not have.

Either way, for a run trained with `--unseen K`: the body's features of the training images (once,
no augmentation); for each of `SPLITS` seeded draws of K pseudo-unseen classes, a last layer like
the run's trained as the run's was (loss, optimiser, rate schedule, batch, epochs) on the other
classes' features; the constant of best H on the validation images `devise.evaluation.metrics.calibration_half`
picks (the ones `devise zeroshot` never scores); and their mean.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from devise.config import TrainConfig
from devise.data import ImageSet
from devise.data.splits import choose_unseen
from devise.model.inference import CONSE_TOP, body_outputs, conse_vectors
from devise.evaluation.metrics import best_harmonic_constant, calibration_half, seen_unseen_margins
from devise.model.network import EmbeddingHead
from devise.training.objectives import objective_for
from devise.log import stage
from devise.training.runs import Run

SPLITS = 3


def class_split_applies(config: TrainConfig, seen_classes: int) -> bool:
    """A run with held-out classes whose last layer alone can be redone (a softmax run for ConSE,
    or a DeViSE run whose body never trained), and seen classes enough to hold one out and keep two."""
    frozen = config.head == "softmax" or config.freeze_epochs >= config.epochs
    return frozen and config.unseen > 0 and seen_classes >= 3


def class_split_constant(run: Run, train_set: ImageSet, val_set: ImageSet, label_vectors: torch.Tensor | None = None,
                         conse_top: int = CONSE_TOP, splits: int = SPLITS, progress: bool = True) -> dict:
    """The mean constant of `splits` class splits of the run's seen classes, with each split's
    pseudo-unseen class ids, constant and best H. `train_set` and `val_set` are the run's seen
    classes' training and validation images. A DeViSE run is scored in its own label vectors; a
    softmax run as ConSE, in `label_vectors` (its classes' vectors in the space compared in)."""
    from devise.training.loop import evenly_spaced, first_images

    train_set = first_images(train_set, run.config.train_limit)  # a trial's first N images: so are its splits
    if run.config.epoch_images:  # a budgeted run's epochs train on fewer images: so do the splits
        train_set = evenly_spaced(train_set, run.config.epoch_images)
    features = body_features(run, train_set, progress)
    chosen = calibration_half(torch.ones(len(val_set), dtype=torch.bool))
    val_features, val_labels = body_features(run, val_set, progress)[chosen], val_set.labels[chosen]  # cached whole
    vectors = F.normalize((run.label_vectors if label_vectors is None else label_vectors).float(), dim=1)
    vectors = vectors.to(features.device)
    count = min(run.config.unseen, train_set.num_classes - 2)
    rows = []
    for split in range(splits):
        seed = run.config.unseen_seed + 1 + split
        pseudo_ids = choose_unseen(train_set.class_ids, count, seed)
        held_out = set(pseudo_ids)
        pseudo = torch.tensor([c in held_out for c in train_set.class_ids])
        kept_columns = (~pseudo).nonzero()[:, 0]
        kept = ~pseudo[train_set.labels]
        kept_vectors = vectors[kept_columns]
        head = fit_head(run.config, features[kept], torch.searchsorted(kept_columns, train_set.labels[kept]),
                        kept_vectors, seed)
        with torch.no_grad():
            queries = head(val_features)
            if run.config.head == "softmax":
                queries = conse_vectors(queries, kept_vectors, conse_top)
        scores = queries.cpu() @ vectors.cpu().T
        margin, seen_right, unseen_right = seen_unseen_margins(scores, val_labels, ~pseudo)
        gamma, harmonic = best_harmonic_constant(margin, seen_right, unseen_right, val_labels, ~pseudo[val_labels])
        rows.append({"pseudo_unseen": pseudo_ids, "gamma": gamma, "harmonic": harmonic})
        stage(f"class split {split + 1}/{splits}: {count} seen classes held out of a head, best H {harmonic:.3f} "
              f"at constant {gamma:.4f}", progress)
    return {"gamma": sum(r["gamma"] for r in rows) / len(rows), "method": "class split", "splits": rows}


def body_features(run: Run, data: ImageSet, progress: bool) -> torch.Tensor:
    """The run's body's output for every image, as its frozen body gave them to the head."""
    return body_outputs(run, data, run.config.eval_batch_size, progress).to(run.device)


def fit_head(config: TrainConfig, features: torch.Tensor, labels: torch.Tensor, vectors: torch.Tensor,
             seed: int) -> nn.Module:
    """A fresh last layer like the run's, trained as the run trained its own on these features:
    an embedding head into `vectors`, or a softmax layer over their classes."""
    from devise.training.loop import head_dropout, learning_rate, make_optimizer, training_step

    torch.manual_seed(seed)
    embedding = config.head == "embedding"
    head = (EmbeddingHead(features.shape[1], vectors.shape[1], config.embed_hidden or None) if embedding
            else nn.Linear(features.shape[1], len(vectors))).to(features.device)
    objective = objective_for(config, vectors if embedding else None)
    optimizer = make_optimizer(config, head)
    batch = min(config.batch_size, len(features))
    steps = len(features) // batch
    generator = torch.Generator().manual_seed(seed)
    head.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(features), generator=generator).to(features.device)
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, epoch * steps + step, steps)
            rows = order[step * batch : (step + 1) * batch]
            inputs = head_dropout(features[rows], config.dropout)
            training_step(head, objective, optimizer, inputs, labels[rows], bf16=False)
    return head.eval()

