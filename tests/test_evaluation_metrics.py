"""What devise measures, by hand and as properties: hit@k, semantic similarity, generalised zero-shot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from devise.evaluation.metrics import (
    bootstrap_interval,
    confusion_counts,
    generalised_figures,
    hit_at_k,
    image_hits,
    per_class_hits,
    ranking_metrics,
    semantic_similarity,
    share_interval,
    similarity_control,
)
from devise.labels.vocabulary import Vocabulary
from devise.model.inference import conse_vectors
from devise.training.calibration import (
    area_under_seen_unseen_curve,
    best_harmonic_constant,
    calibration_gamma,
    harmonic_mean,
    seen_unseen_curve,
)

E = torch.eye(3)


def test_conse_is_the_probability_weighted_mean_of_the_top_t_label_vectors():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    assert torch.allclose(conse_vectors(logits, E, top=2), F.normalize(torch.tensor([[0.5, 0.3, 0.0]]), dim=1))
    assert torch.allclose(conse_vectors(logits, E, top=1), torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.allclose(conse_vectors(logits, E, top=10), F.normalize(torch.tensor([[0.5, 0.3, 0.2]]), dim=1))


def test_semantic_similarity_is_the_mean_cosine_to_the_top_predictions():
    true = torch.tensor([[1.0, 0.0]])
    top3 = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]])
    assert semantic_similarity(true, top3).item() == pytest.approx((1 + 0 + 0.6) / 3)


def test_similarity_control_averages_random_label_pairs():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    training_labels = torch.tensor([[1.0, 0.0]])
    # Half of the random pairs score 1, half 0.
    assert similarity_control(target, training_labels, pairs=20000) == pytest.approx(0.5, abs=0.02)
    assert similarity_control(training_labels, training_labels, pairs=100) == pytest.approx(1.0)


def test_ranking_metrics_on_a_hand_built_case():
    candidates = Vocabulary(["cat", "dog", "car"], torch.eye(3), "hand")
    true_labels = ["cat", "dog", "zebra"]
    labels = torch.tensor([0, 1, 2, 0])
    top = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 2], [2, 0, 1]])
    truth = candidates.positions(true_labels)  # [0, 1, -1]: "zebra" is not a candidate
    result = ranking_metrics(top, candidates.vectors, truth, labels, torch.eye(3)[[0, 1, 0, 0]], ks=(1, 2, 3))
    assert result["hit@1"] == 0.25 and result["hit@2"] == 0.75 and result["hit@3"] == 0.75
    assert result["per_class_top1"] == pytest.approx((0.5 + 0 + 0) / 3)  # "zebra" is never a candidate
    assert harmonic_mean(0.5, 0.25) == pytest.approx(1 / 3) and harmonic_mean(0, 0) == 0


def test_calibrated_stacking_sweeps_from_all_seen_to_all_unseen_by_hand():
    # Classes 0, 1 are seen, 2, 3 unseen; one image each. margin = best seen score - best unseen;
    # gamma above an image's margin names it with its best unseen label.
    labels = torch.tensor([0, 1, 2, 3])
    seen_image = torch.tensor([True, True, False, False])
    margin = torch.tensor([0.3, -0.1, 0.2, 0.2])
    seen_right = torch.tensor([True, True, False, False])  # both seen images: best seen label is right
    unseen_right = torch.tensor([False, False, True, False])  # image 2's best unseen label is right
    gammas, S, U = seen_unseen_curve(margin, seen_right, unseen_right, labels, seen_image)
    # gamma: -inf -> both seen images right; past -0.1 image 1 flips; past 0.2 images 2, 3 (tied);
    # past 0.3 image 0.
    assert gammas.tolist() == pytest.approx([float("-inf"), -0.1, 0.2, 0.3])
    assert S.tolist() == pytest.approx([1.0, 0.5, 0.5, 0.0])
    assert U.tolist() == pytest.approx([0.0, 0.0, 0.5, 0.5])
    assert area_under_seen_unseen_curve(S, U) == pytest.approx(0.5 * 0.5)
    # H is best (0.5) between 0.2 and 0.3: the constant is taken midway, where `margin < gamma`
    # names images 1, 2 and 3 unseen as the curve counts them.
    assert best_harmonic_constant(margin, seen_right, unseen_right, labels, seen_image) == pytest.approx((0.25, 0.5))
    # Naming a quarter of the seen images unseen takes the quarter quantile of their margins.
    assert calibration_gamma(torch.tensor([-0.1, 0.1, 0.3, 0.5, 0.7]), 0.25) == pytest.approx(0.1)


def test_generalised_zero_shot_calibrates_on_seen_images_it_does_not_score():
    # Labels 0, 1 seen, 2, 3 unseen. Seen images 0 and 2 (every other one) choose the constant;
    # images 1, 3, 4, 5 are scored. margin = best seen score - best unseen score.
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.0],   # calibration, margin 0.4
                           [0.8, 0.2, 0.7, 0.0],   # right among seen labels, margin 0.1
                           [0.1, 0.6, 0.0, 0.4],   # calibration, margin 0.2
                           [0.1, 0.9, 0.3, 0.2],   # right among seen labels, margin 0.6
                           [0.7, 0.1, 0.5, 0.2],   # unseen: right among unseen labels, margin 0.2
                           [0.2, 0.6, 0.1, 0.3]])  # unseen: right among unseen labels, margin 0.3
    figures = generalised_figures(scores, labels, torch.tensor([True, True, False, False]))
    assert (figures["gzsl_seen"], figures["gzsl_unseen"], figures["gzsl_harmonic"]) == (1.0, 0.0, 0.0)
    # Half the labels are unseen: the constant is the median of the calibration margins, 0.3;
    # image 1 (0.1) and image 4 (0.2) are then named unseen, image 5 (0.3) not.
    assert figures["gzsl_gamma"] == pytest.approx(0.3)
    assert (figures["gzsl_cal_seen"], figures["gzsl_cal_unseen"]) == (0.5, 0.5)
    assert figures["gzsl_cal_harmonic"] == pytest.approx(0.5)
    # The curve (U, S): (0, 1) (0, .5) (.5, .5) (1, .5) (1, 0): area 0.5, best H 2/3 at (1, .5).
    assert figures["gzsl_ausuc"] == pytest.approx(0.5)
    assert figures["gzsl_best_harmonic"] == pytest.approx(2 / 3)
    # A constant the model brings (a class split's) is used as given: 0.35 names images 1, 4, 5 unseen.
    brought = generalised_figures(scores, labels, torch.tensor([True, True, False, False]), gamma=0.35)
    assert brought["gzsl_gamma"] == 0.35 and (brought["gzsl_cal_seen"], brought["gzsl_cal_unseen"]) == (0.5, 1.0)


def test_per_class_hits_and_confusion_counts_on_a_hand_built_case():
    # Candidates "cat" 0, "dog" 1, "car" 2; target classes cat, dog, zebra (not a candidate).
    truth = torch.tensor([0, 1, -1])
    labels = torch.tensor([0, 0, 1, 2])
    top = torch.tensor([[0, 1], [1, 0], [0, 1], [2, 0]])
    found = image_hits(top, truth, labels)
    assert found.tolist() == [[True, True], [False, True], [False, True], [False, False]]
    table = per_class_hits(found, labels, 4, ks=(1, 2))  # a fourth class without images
    assert table == {"images": [2, 1, 1, 0], "hit@1": [0.5, 0.0, 0.0, None], "hit@2": [1.0, 1.0, 0.0, None]}
    # Rows: true class; columns: the target class of the first candidate, the last one "not a target label".
    assert confusion_counts(top[:, 0], truth, labels) == [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]


def test_the_seen_unseen_curve_comes_with_the_figures_ends_included():
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    scores = torch.rand(6, 4, generator=torch.Generator().manual_seed(0))
    figures = generalised_figures(scores, labels, torch.tensor([True, True, False, False]))
    curve = figures["seen_unseen_curve"]
    assert curve["unseen"][0] == 0.0 and curve["seen"][-1] == 0.0  # all named seen ... all named unseen
    area = sum((u1 - u0) * (s1 + s0) / 2 for u0, u1, s0, s1 in
               zip(curve["unseen"], curve["unseen"][1:], curve["seen"], curve["seen"][1:]))
    assert area == pytest.approx(figures["gzsl_ausuc"], abs=1e-5)


def test_the_bootstrap_interval_of_a_hit_rate_matches_resampling_the_images():
    hits = torch.rand(400, generator=torch.Generator().manual_seed(1)) < 0.3
    low, high = bootstrap_interval(hits, resamples=4000)
    rng = torch.Generator().manual_seed(2)
    means = hits.float()[torch.randint(0, 400, (4000, 400), generator=rng)].mean(dim=1)
    by_resampling = torch.quantile(means, torch.tensor([0.025, 0.975])).tolist()
    assert low < float(hits.float().mean()) < high
    assert (low, high) == pytest.approx(by_resampling, abs=0.01)
    assert bootstrap_interval(hits) == bootstrap_interval(hits), "seeded: the same interval every time"
    assert share_interval(1.0, 50) == [1.0, 1.0] and share_interval(0.5, 0) == [0.5, 0.5]


SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(st.integers(1, 60), st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_hit_at_k_is_the_share_of_true_labels_ranked_within_k(images, classes, seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.stack([torch.randperm(classes, generator=generator).float() for _ in range(images)])  # no ties
    labels = torch.randint(0, classes, (images,), generator=generator)
    ks = tuple(range(1, classes + 2))
    result = hit_at_k(scores, labels, ks)
    rank = (scores > scores.gather(1, labels[:, None])).sum(dim=1)  # how many classes beat the true one
    for k in ks:
        assert result[f"hit@{k}"] == pytest.approx(float((rank < k).float().mean()))
    assert [result[f"hit@{k}"] for k in ks] == sorted(result[f"hit@{k}"] for k in ks)
    assert result[f"hit@{classes}"] == 1.0


@SETTINGS
@given(st.integers(1, 20), st.integers(1, 5), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_semantic_similarity_is_the_mean_cosine_for_any_images_top_and_dimension(images, top, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    true = F.normalize(torch.randn(images, dim, generator=generator), dim=1)
    predicted = F.normalize(torch.randn(images, top, dim, generator=generator), dim=2)
    similarity = semantic_similarity(true, predicted)
    by_hand = torch.tensor([sum(float(true[i] @ predicted[i, j]) for j in range(top)) / top for i in range(images)])
    torch.testing.assert_close(similarity, by_hand, atol=1e-5, rtol=0)
    assert (similarity.abs() <= 1 + 1e-5).all()
    # Predicting the true label itself every time scores 1; the control of a set against itself is its mean cosine.
    torch.testing.assert_close(semantic_similarity(true, true[:, None, :].expand(-1, top, -1)), torch.ones(images))
    assert -1 - 1e-5 <= similarity_control(true, true, pairs=500, seed=seed % 1000) <= 1 + 1e-5
