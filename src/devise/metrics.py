"""Accuracy measures: top-k hits of class scores."""

from __future__ import annotations

import torch


def topk_counts(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...]) -> torch.Tensor:
    """How many rows have their true label among the k highest scores, one count per k, left on
    the scores' device (a training loop on a GPU adds them up without waiting for each step).

    Ties are broken by `torch.topk`'s order; k larger than the number of classes counts all.
    """
    k_max = min(max(ks), scores.shape[1])
    top = scores.topk(k_max, dim=1).indices
    found = top == labels[:, None]
    cumulative = found.cumsum(dim=1).clamp_(max=1)
    return torch.stack([cumulative[:, min(k, k_max) - 1].sum() for k in ks])


def topk_hits(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...]) -> dict[int, int]:
    """`topk_counts` as a dict {k: count}."""
    return dict(zip(ks, topk_counts(scores, labels, ks).tolist()))


HIT_KS = (1, 2, 3, 5, 10, 20)


def hit_at_k(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = HIT_KS) -> dict[str, float]:
    """Fraction of rows whose true label is among the k best-scored classes ("hit@k")."""
    hits = topk_hits(scores, labels, ks)
    return {f"hit@{k}": hits[k] / len(labels) for k in ks}


def chance_hit_at_k(num_classes: int, ks: tuple[int, ...] = HIT_KS) -> dict[str, float]:
    """hit@k of a model that ranks classes at random: k / C."""
    return {f"hit@{k}": min(k, num_classes) / num_classes for k in ks}
