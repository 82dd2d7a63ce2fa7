"""What devise measures: top-k hits of class scores, and the zero-shot measures (hit@k over a
vocabulary, the paper's semantic similarity and its random-pair control, generalised zero-shot)."""

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


# ---------------------------------------------------------------------------------------------
# Zero-shot: hit@k over a vocabulary, the paper's semantic similarity and its control, GZSL

ZERO_SHOT_KS = (1, 2, 5, 10, 20)
SIMILARITY_TOP = 3


def semantic_similarity(true_vectors: torch.Tensor, predicted_vectors: torch.Tensor) -> torch.Tensor:
    """Per image: mean cosine between its true label's vector (N x D) and each of its top
    predictions' vectors (N x P x D). The paper's metric uses P = 3."""
    return (predicted_vectors * true_vectors[:, None, :]).sum(dim=2).mean(dim=1)


def similarity_control(target_vectors: torch.Tensor, training_vectors: torch.Tensor, pairs: int = 10_000,
                       seed: int = 0) -> float:
    """Mean cosine of random (target label, training label) pairs: what guessing scores."""
    generator = torch.Generator().manual_seed(seed)
    i = torch.randint(0, target_vectors.shape[0], (pairs,), generator=generator)
    j = torch.randint(0, training_vectors.shape[0], (pairs,), generator=generator)
    return float((target_vectors[i] * training_vectors[j]).sum(dim=1).mean())


def ranking_metrics(top_index: torch.Tensor, candidate_vectors: torch.Tensor, truth: torch.Tensor,
                    labels: torch.Tensor, true_vectors: torch.Tensor,
                    ks: tuple[int, ...] = ZERO_SHOT_KS) -> dict[str, float]:
    """hit@k, per-class mean top-1 and semantic similarity of a ranking of candidates.

    `top_index` (N x k) holds each image's best candidates, best first; `labels` (N) is each
    image's class; `truth[c]` is class c's index among the candidates, or -1 when it is not one;
    `true_vectors` holds the vector of each image's true label (one row per image).
    """
    truth = truth[labels]
    hits = (top_index == truth[:, None]) & (truth[:, None] >= 0)
    found = hits.cumsum(dim=1).clamp(max=1).float()
    result = {f"hit@{k}": float(found[:, min(k, found.shape[1]) - 1].mean()) for k in ks}
    per_class = [float(found[labels == c, 0].mean()) for c in labels.unique()]
    result["per_class_top1"] = sum(per_class) / len(per_class)
    top = top_index[:, :SIMILARITY_TOP]
    result["similarity"] = float(semantic_similarity(true_vectors, candidate_vectors[top]).mean())
    return result


def harmonic_mean(seen: float, unseen: float) -> float:
    return 2 * seen * unseen / (seen + unseen) if seen + unseen > 0 else 0.0


def per_class_accuracy(correct: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over the classes present under `mask` of the share of their images named correctly."""
    classes = labels[mask].unique()
    if len(classes) == 0:
        return 0.0
    return float(torch.stack([correct[mask & (labels == c)].float().mean() for c in classes]).mean())


def generalised_zero_shot(correct: torch.Tensor, labels: torch.Tensor, seen_image: torch.Tensor) -> dict[str, float]:
    """S, U and H: per-class top-1 over all labels on seen-class and on unseen-class images."""
    seen, unseen = per_class_accuracy(correct, labels, seen_image), per_class_accuracy(correct, labels, ~seen_image)
    return {"gzsl_seen": seen, "gzsl_unseen": unseen, "gzsl_harmonic": harmonic_mean(seen, unseen)}
