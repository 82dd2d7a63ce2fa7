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
HIERARCHY_KS = ZERO_SHOT_KS  # Frome et al.'s hierarchical precision@k
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


# ---------------------------------------------------------------------------------------------
# Calibrated stacking (Chao et al. 2016): a constant gamma taken off every seen label's score
# before the top-1 over all labels. An image is named with an unseen label when gamma exceeds its
# margin: its best seen label's score minus its best unseen label's.


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


def generalised_figures(scores: torch.Tensor, labels: torch.Tensor, seen_label: torch.Tensor,
                        calibrate: bool = True, gamma: float | None = None) -> dict[str, float]:
    """Generalised zero-shot from every image's scores over all labels (N x C; `seen_label` marks
    the seen columns): S, U and H as they come, and with `calibrate` also with calibrated stacking
    (Chao et al. 2016), and AUSUC, the area under the whole S-U curve, with the best H anywhere on
    it (an upper reference only: finding its constant takes the unseen images' labels). Scored on
    the images `calibration_half` leaves out.

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
            "gzsl_ausuc": area_under_seen_unseen_curve(S, U), "gzsl_best_harmonic": best}
