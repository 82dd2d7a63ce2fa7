"""What devise measures: top-k hits of class scores, and the zero-shot measures (hit@k over a
vocabulary, the paper's semantic similarity and its random-pair control, generalised zero-shot)."""

from __future__ import annotations

import numpy as np
import torch

from devise.model.topk import topk_hits
from devise.training.calibration import (
    area_under_seen_unseen_curve,
    calibration_gamma,
    calibration_half,
    harmonic_curve,
    harmonic_mean,
    seen_unseen_curve,
    seen_unseen_margins,
)

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
HIERARCHY_KS = ZERO_SHOT_KS  # Frome et al.'s hierarchical precision@k
SIMILARITY_TOP = 3
BOOTSTRAP_RESAMPLES = 1000


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
                    *, ks: tuple[int, ...] = ZERO_SHOT_KS) -> dict[str, float]:
    """hit@k, per-class mean top-1 and semantic similarity of a ranking of candidates.

    `top_index` (N x k) holds each image's best candidates, best first; `labels` (N) is each
    image's class; `truth[c]` is class c's index among the candidates, or -1 when it is not one;
    `true_vectors` holds the vector of each image's true label (one row per image).
    """
    found = image_hits(top_index, truth, labels).float()
    result = {f"hit@{k}": float(found[:, min(k, found.shape[1]) - 1].mean()) for k in ks}
    per_class = [float(found[labels == c, 0].mean()) for c in labels.unique()]
    result["per_class_top1"] = sum(per_class) / len(per_class)
    top = top_index[:, :SIMILARITY_TOP]
    result["similarity"] = float(semantic_similarity(true_vectors, candidate_vectors[top]).mean())
    return result


def image_hits(top_index: torch.Tensor, truth: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """N x k booleans: whether each image's true label is among its first j + 1 candidates (the
    per-image figures that hit@k averages, and that a bootstrap resamples)."""
    truth = truth[labels]
    hits = (top_index == truth[:, None]) & (truth[:, None] >= 0)
    return hits.cumsum(dim=1) > 0


def per_class_hits(found: torch.Tensor, labels: torch.Tensor, num_classes: int,
                   ks: tuple[int, ...] = ZERO_SHOT_KS) -> dict[str, list]:
    """Each class's image count and hit@k (`found`: `image_hits`), as lists in class order: the
    per-class table of the report. A class without images has None for its hit@k."""
    counts = torch.bincount(labels, minlength=num_classes)
    table: dict[str, list] = {"images": counts.tolist()}
    for k in ks:
        sums = torch.zeros(num_classes, dtype=torch.float64).index_add_(
            0, labels, found[:, min(k, found.shape[1]) - 1].double())
        table[f"hit@{k}"] = [float(s / n) if n else None for s, n in zip(sums.tolist(), counts.tolist())]
    return table


def confusion_counts(top1: torch.Tensor, truth: torch.Tensor, labels: torch.Tensor) -> list[list[int]]:
    """C x (C + 1) counts: row c, the images of target class c; column j < C, those whose first
    candidate is class j's label; column C, those whose first candidate is not a target label at
    all (every image of a model that ranks only its training labels). `truth[c]` is class c's
    index among the candidates, or -1."""
    classes = len(truth)
    candidates = int(max(top1.max() if len(top1) else 0, truth.max() if classes else 0)) + 1
    column_of = torch.full((candidates,), classes, dtype=torch.int64)  # a candidate's target class, or C
    named = (truth >= 0).nonzero()[:, 0]
    column_of[truth[named]] = named
    counts = torch.zeros(classes * (classes + 1), dtype=torch.int64)
    counts.index_add_(0, labels * (classes + 1) + column_of[top1], torch.ones(len(labels), dtype=torch.int64))
    return counts.view(classes, classes + 1).tolist()


def share_interval(share: float, count: int, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                   level: float = 0.95) -> list[float]:
    """The percentile bootstrap interval of a share of `count` images that are right (hit@k): the
    sum of `count` 0/1 values drawn with replacement is Binomial(count, share), so drawing that is
    the bootstrap over images without materialising `resamples` x `count` indices."""
    if count <= 0:
        return [share, share]
    rng = np.random.default_rng(seed)
    means = rng.binomial(count, min(max(share, 0.0), 1.0), resamples) / count
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [float(low), float(high)]


def bootstrap_interval(hits: torch.Tensor, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                       level: float = 0.95) -> list[float]:
    """The 95% (`level`) percentile bootstrap interval over images of the mean of per-image 0/1
    figures (`image_hits`' column for one k)."""
    return share_interval(float(hits.float().mean()) if len(hits) else 0.0, len(hits), resamples=resamples,
                          seed=seed, level=level)


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


def generalised_figures(scores: torch.Tensor, labels: torch.Tensor, seen_label: torch.Tensor,
                        calibrate: bool = True, gamma: float | None = None) -> dict:
    """Generalised zero-shot from every image's scores over all labels (N x C; `seen_label` marks
    the seen columns): S, U and H as they come, and with `calibrate` also with calibrated stacking
    (Chao et al. 2016), and AUSUC, the area under the whole S-U curve, with the best H anywhere on
    it (an upper reference only: finding its constant takes the unseen images' labels), and the
    curve's points to draw it (`curve_points`). Scored on the images `calibration_half` leaves out.

    The constant is `gamma` where the model brings one (`devise.training.calibration`: Chao et al.'s class
    split, chosen on the `calibration_half` images); else it names as many of the calibration
    images unseen as there are unseen labels among all (a random guess's rate). Neither looks at
    an unseen-class image."""
    seen_image = seen_label[labels]
    calibration = calibration_half(seen_image)
    scored = ~calibration
    margin, seen_right, unseen_right = seen_unseen_margins(scores, labels, seen_label)

    def at(gamma: float) -> dict[str, float]:
        correct = torch.where(margin < gamma, unseen_right, seen_right)
        return generalised_zero_shot(correct[scored], labels[scored], seen_image[scored])

    figures = at(0.0)
    if not calibrate:
        return figures
    if gamma is None:
        gamma = calibration_gamma(margin[calibration], int((~seen_label).sum()) / len(seen_label))
    calibrated = at(gamma)
    _, S, U = seen_unseen_curve(margin[scored], seen_right[scored], unseen_right[scored], labels[scored],
                                seen_image[scored])
    best = float(harmonic_curve(S, U).max())
    return {**figures, "gzsl_gamma": gamma, "gzsl_cal_seen": calibrated["gzsl_seen"],
            "gzsl_cal_unseen": calibrated["gzsl_unseen"], "gzsl_cal_harmonic": calibrated["gzsl_harmonic"],
            "gzsl_ausuc": area_under_seen_unseen_curve(S, U), "gzsl_best_harmonic": best,
            "seen_unseen_curve": curve_points(S, U)}


CURVE_POINTS = 200


def curve_points(S: torch.Tensor, U: torch.Tensor, most: int = CURVE_POINTS) -> dict[str, list[float]]:
    """At most `most` + 1 evenly chosen points of an S-U curve, its two ends always among them: enough
    to draw the curve whose area AUSUC is, small enough for zeroshot.json."""
    keep = torch.linspace(0, len(S) - 1, min(len(S), most + 1)).round().long().unique()
    return {"unseen": [round(float(u), 6) for u in U[keep]], "seen": [round(float(v), 6) for v in S[keep]]}
