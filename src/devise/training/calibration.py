"""Calibrated stacking (Chao et al. 2016): the constant taken off every seen label's score so that
a model trained on seen classes alone can name an unseen one, chosen as Chao et al. chose it, on
class splits: seen classes held out of a last layer retrained on the body's features, and the
constant of best H between them and the rest (never an unseen image). Also the seen-unseen curve
the constant moves along. The protocol: docs/zero-shot.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from devise.config import TrainConfig
from devise.data.base import ImageSet
from devise.data.splits import choose_unseen
from devise.model.inference import CONSE_TOP, conse_vectors
from devise.model.network import EmbeddingHead
from devise.training.objectives import objective_for
from devise.training.steps import (
    evenly_spaced,
    first_images,
    head_dropout,
    learning_rate,
    make_optimizer,
    training_step,
)

log = logging.getLogger(__name__)

SPLITS = 3


def class_split_applies(config: TrainConfig, seen_classes: int) -> bool:
    """A run with held-out classes whose last layer alone can be redone (a softmax run for ConSE,
    or a DeViSE run whose body never trained), and seen classes enough to hold one out and keep two."""
    frozen = config.head == "softmax" or config.freeze_epochs >= config.epochs
    return frozen and config.unseen > 0 and seen_classes >= 3


def class_split_constant(settings: TrainConfig, features_of: Callable[[ImageSet], torch.Tensor], train_set: ImageSet,
                         val_set: ImageSet, label_vectors: torch.Tensor, *, conse_top: int = CONSE_TOP,
                         splits: int = SPLITS, progress: bool = True) -> dict:
    """The mean constant of `splits` class splits of a run's seen classes, with each split's
    pseudo-unseen class ids, constant and best H. `settings` are the run's; `features_of(images)`
    gives its body's features (as its frozen body gave them to the head); `train_set` and `val_set`
    are its seen classes' training and validation images. A DeViSE run is scored in its own label
    vectors; a softmax run as ConSE, in `label_vectors` (its classes' vectors in the space compared
    in)."""
    train_set = first_images(train_set, settings.train_limit)  # a trial's first N images: so are its splits
    if settings.epoch_images:  # a budgeted run's epochs train on fewer images: so do the splits
        train_set = evenly_spaced(train_set, settings.epoch_images)
    features = features_of(train_set)
    chosen = calibration_half(torch.ones(len(val_set), dtype=torch.bool))
    val_features, val_labels = features_of(val_set)[chosen], val_set.labels[chosen]  # cached whole, half used
    vectors = F.normalize(label_vectors.float(), dim=1).to(features.device)
    count = min(settings.unseen, train_set.num_classes - 2)
    rows = []
    for split in range(splits):
        seed = settings.unseen_seed + 1 + split
        pseudo_ids = choose_unseen(train_set.class_ids, count, seed)
        held_out = set(pseudo_ids)
        pseudo = torch.tensor([c in held_out for c in train_set.class_ids])
        kept_columns = (~pseudo).nonzero()[:, 0]
        kept = ~pseudo[train_set.labels]
        kept_vectors = vectors[kept_columns]
        head = fit_head(settings, features[kept], torch.searchsorted(kept_columns, train_set.labels[kept]),
                        kept_vectors, seed)
        with torch.no_grad():
            queries = head(val_features)
            if settings.head == "softmax":
                queries = conse_vectors(queries, kept_vectors, conse_top)
        scores = queries.cpu() @ vectors.cpu().T
        margin, seen_right, unseen_right = seen_unseen_margins(scores, val_labels, ~pseudo)
        gamma, harmonic = best_harmonic_constant(margin, seen_right, unseen_right, val_labels, ~pseudo[val_labels])
        rows.append({"pseudo_unseen": pseudo_ids, "gamma": gamma, "harmonic": harmonic})
        log.info(f"class split {split + 1}/{splits}: {count} seen classes held out of a head, best H {harmonic:.3f} "
              f"at constant {gamma:.4f}")
    return {"gamma": sum(r["gamma"] for r in rows) / len(rows), "method": "class split", "splits": rows}


def fit_head(config: TrainConfig, features: torch.Tensor, labels: torch.Tensor, vectors: torch.Tensor,
             seed: int) -> nn.Module:
    """A fresh last layer like the run's, trained as the run trained its own on these features:
    an embedding head into `vectors`, or a softmax layer over their classes."""
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


# ---------------------------------------------------------------------------------------------
# Calibrated stacking (Chao et al. 2016): a constant gamma taken off every seen label's score
# before the top-1 over all labels. An image is named with an unseen label when gamma exceeds its
# margin: its best seen label's score minus its best unseen label's.


def harmonic_mean(seen: float, unseen: float) -> float:
    return 2 * seen * unseen / (seen + unseen) if seen + unseen > 0 else 0.0


def class_weights(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per image under `mask`, 1 / (classes under the mask x images of its class): summing these over
    the correctly named images gives the per-class mean accuracy; 0 outside the mask."""
    weights = torch.zeros(len(labels), dtype=torch.float64)
    classes, counts = labels[mask].unique(return_counts=True)
    if len(classes):
        per_class = torch.zeros(int(labels.max()) + 1, dtype=torch.float64)
        per_class[classes] = 1.0 / (len(classes) * counts.double())
        weights[mask] = per_class[labels[mask]]
    return weights


def seen_unseen_curve(margin: torch.Tensor, seen_right: torch.Tensor, unseen_right: torch.Tensor,
                      labels: torch.Tensor, seen_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gammas, S, U): per-class accuracy on seen- and unseen-class images as gamma sweeps from
    below every margin (nothing named unseen) to above every one (everything named unseen).

    `seen_right` says an image's best seen label is its true one, `unseen_right` the same among
    unseen labels; S[j] and U[j] hold for gamma just above gammas[j] (gammas[0] = -inf).
    """
    order = margin.argsort()
    d = margin[order].double()
    seen_gain = (class_weights(labels, seen_image) * seen_right)[order]
    unseen_gain = (class_weights(labels, ~seen_image) * unseen_right)[order]
    last = torch.ones(len(d), dtype=torch.bool)  # the end of each run of tied margins
    last[:-1] = d[1:] != d[:-1]
    S = torch.cat([seen_gain.sum()[None], seen_gain.sum() - seen_gain.cumsum(0)[last]])
    U = torch.cat([torch.zeros(1, dtype=torch.float64), unseen_gain.cumsum(0)[last]])
    gammas = torch.cat([torch.tensor([float("-inf")], dtype=torch.float64), d[last]])
    return gammas, S.clamp(min=0), U


def harmonic_curve(S: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """H at every point of an S-U curve (`harmonic_mean`, point by point)."""
    return torch.where(S + U > 0, 2 * S * U / (S + U), torch.zeros_like(S))


def best_harmonic_constant(margin: torch.Tensor, seen_right: torch.Tensor, unseen_right: torch.Tensor,
                           labels: torch.Tensor, seen_image: torch.Tensor) -> tuple[float, float]:
    """(gamma, H): the constant that gives these images the best H anywhere on their S-U curve
    (`seen_unseen_curve`), taken midway inside its step so that `margin < gamma` names unseen
    exactly the images the curve counts there, and that H."""
    gammas, S, U = seen_unseen_curve(margin, seen_right, unseen_right, labels, seen_image)
    if len(gammas) == 1:
        return 0.0, 0.0
    H = harmonic_curve(S, U)
    best = int(H.argmax())
    if best == 0:
        gamma = float(gammas[1])  # below every margin: nothing named unseen
    elif best == len(gammas) - 1:
        gamma = float(gammas[best]) + 1.0  # above every margin: everything named unseen
    else:
        gamma = float(gammas[best] + gammas[best + 1]) / 2
    return gamma, float(H[best])


def area_under_seen_unseen_curve(S: torch.Tensor, U: torch.Tensor) -> float:
    """AUSUC (Chao et al.): the area under S as a function of U, by the trapezoid rule."""
    return float(((U[1:] - U[:-1]) * (S[1:] + S[:-1]) / 2).sum())


def calibration_gamma(margin: torch.Tensor, share: float) -> float:
    """The gamma that names `share` of these (seen-class) images with an unseen label: the `share`
    quantile of their margins. Chosen on seen-class images only, it never looks at an unseen one."""
    if len(margin) == 0:
        return 0.0
    return float(torch.quantile(margin.double(), min(max(share, 0.0), 1.0)))


def calibration_half(seen_image: torch.Tensor) -> torch.Tensor:
    """Every other seen-class image (in dataset order): the images calibrated stacking chooses its
    constant on. The other half and every unseen-class image are the ones scored."""
    chosen = torch.zeros_like(seen_image)
    chosen[seen_image.nonzero()[::2, 0]] = True
    return chosen


def seen_unseen_margins(scores: torch.Tensor, labels: torch.Tensor,
                        seen_label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image (rows of `scores`, N x C; `seen_label` marks the seen columns): its best seen
    label's score less its best unseen label's (what calibrated stacking's constant is weighed
    against), and whether the best seen label and the best unseen label are its true one."""
    seen_columns, unseen_columns = seen_label.nonzero()[:, 0], (~seen_label).nonzero()[:, 0]
    best_seen, seen_index = scores[:, seen_columns].max(dim=1)
    best_unseen, unseen_index = scores[:, unseen_columns].max(dim=1)
    return best_seen - best_unseen, seen_columns[seen_index] == labels, unseen_columns[unseen_index] == labels
