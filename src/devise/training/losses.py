"""Losses of the embedding model, each vectorised over the batch and selected by name.

`predicted` holds unit vectors (N x D), `label_vectors` the unit vectors of all training
classes (C x D), `labels` the true class of each row (N). Cosine similarity of unit vectors is
their dot product. Every loss takes the same keywords (`margin`, `temperature`, `generator`)
and ignores those it has no use for, so that the objective can call any of them alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from devise.config import LOSSES
from devise.errors import DeviseError


def cosine_loss(predicted: torch.Tensor, label_vectors: torch.Tensor, labels: torch.Tensor,
                margin: float = 0.1, generator: torch.Generator | None = None, temperature: float = 0.05) -> torch.Tensor:
    """1 - cos(v, t): pull each prediction towards its label's vector (the paper's first loss)."""
    return (1 - (predicted * label_vectors[labels]).sum(dim=1)).mean()


def random_wrong_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each label, one other class drawn uniformly from the remaining C - 1."""
    device = generator.device if generator is not None else labels.device  # draws where the batch is
    offset = torch.randint(1, num_classes, labels.shape, generator=generator, device=device)
    return (labels + offset.to(labels.device)) % num_classes


def hinge_loss(predicted: torch.Tensor, label_vectors: torch.Tensor, labels: torch.Tensor,
               margin: float = 0.1, generator: torch.Generator | None = None, temperature: float = 0.05) -> torch.Tensor:
    """1 - cos(v, t) + max(0, cos(v, t') - margin), t' the vector of one random wrong label.

    The paper's second loss: besides pulling towards the right label it pushes away from a
    wrong one, but only while the wrong one is closer than `margin`.
    """
    wrong = random_wrong_labels(labels, label_vectors.shape[0], generator)
    right_sim = (predicted * label_vectors[labels]).sum(dim=1)
    wrong_sim = (predicted * label_vectors[wrong]).sum(dim=1)
    return (1 - right_sim + (wrong_sim - margin).clamp(min=0)).mean()


def rank_loss(predicted: torch.Tensor, label_vectors: torch.Tensor, labels: torch.Tensor,
              margin: float = 0.1, generator: torch.Generator | None = None, temperature: float = 0.05) -> torch.Tensor:
    """Frome et al.'s hinge rank loss: sum over wrong labels j of max(0, margin - t.v + t_j.v).

    Every wrong label that scores within `margin` of the right one contributes, so the loss
    optimises the ranking that hit@k measures.
    """
    similarities = predicted @ label_vectors.T  # N x C
    right = similarities.gather(1, labels[:, None])
    violations = (margin - right + similarities).clamp(min=0)
    violations = violations.scatter(1, labels[:, None], 0.0)  # the right label is no violation
    return violations.sum(dim=1).mean()


def crossentropy_loss(predicted: torch.Tensor, label_vectors: torch.Tensor, labels: torch.Tensor,
                      margin: float = 0.1, generator: torch.Generator | None = None,
                      temperature: float = 0.05) -> torch.Tensor:
    """Cross-entropy of the cosines to every label, divided by `temperature`.

    Like the rank loss it compares the right label with all wrong ones, but smoothly: every
    wrong label pushes in proportion to its softmax weight, so the gradient never vanishes
    while the ranking can still improve. CLIP-style zero-shot models train this way.
    """
    return F.cross_entropy(predicted @ label_vectors.T / temperature, labels)


FUNCTIONS = {name: globals()[f"{name}_loss"] for name in LOSSES}  # one per choice of --loss, by its name


def get_loss(name: str):
    if name not in FUNCTIONS:
        raise DeviseError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return FUNCTIONS[name]
