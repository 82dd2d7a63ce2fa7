"""Embedding losses against hand-computed values, and ranking against brute force."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from devise.errors import DeviseError
from devise.evaluation.metrics import chance_hit_at_k, hit_at_k
from devise.model import topk as rank
from devise.model.topk import rank_topk
from devise.training.losses import cosine_loss, crossentropy_loss, get_loss, hinge_loss, random_wrong_labels, rank_loss

# Three label vectors on the unit circle of a 2-d space: at 0, 90 and 180 degrees.
LABELS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])


def unit(degrees: float) -> torch.Tensor:
    radians = math.radians(degrees)
    return torch.tensor([[math.cos(radians), math.sin(radians)]])


def test_cosine_loss_is_one_minus_cosine():
    assert cosine_loss(unit(0), LABELS, torch.tensor([0])) == pytest.approx(0.0, abs=1e-6)
    assert cosine_loss(unit(60), LABELS, torch.tensor([0])) == pytest.approx(0.5, abs=1e-6)
    assert cosine_loss(unit(0), LABELS, torch.tensor([2])) == pytest.approx(2.0, abs=1e-6)


def test_hinge_loss_adds_the_wrong_label_only_inside_the_margin():
    # Prediction at 60 degrees, true label 0 (cos 0.5); the only wrong label drawn is 1 (cos(30) = 0.866).
    generator = torch.Generator().manual_seed(0)
    two = LABELS[:2]
    loss = hinge_loss(unit(60), two, torch.tensor([0]), margin=0.1, generator=generator)
    assert loss == pytest.approx(1 - 0.5 + (math.cos(math.radians(30)) - 0.1), abs=1e-5)
    # A wrong label whose cosine is exactly the margin adds nothing; just above it adds the excess.
    angle = math.degrees(math.acos(0.1))  # cos(prediction, label 1) = 0.1
    at_margin = hinge_loss(unit(90 - angle), two, torch.tensor([0]), margin=0.1)
    assert at_margin == pytest.approx(1 - math.cos(math.radians(90 - angle)), abs=1e-6)
    past = hinge_loss(unit(90 - angle + 1), two, torch.tensor([0]), margin=0.1)
    assert past > 1 - math.cos(math.radians(90 - angle + 1)) + 1e-4


def test_crossentropy_loss_is_the_softmax_loss_of_cosines_over_temperature():
    # Prediction at 60 degrees, true label 1: cosines 0.5, 0.866, -0.5 to the three labels.
    cosines = [0.5, math.cos(math.radians(30)), -0.5]
    for temperature in (1.0, 0.1):
        logits = [c / temperature for c in cosines]
        expected = -logits[1] + math.log(sum(math.exp(x) for x in logits))
        loss = crossentropy_loss(unit(60), LABELS, torch.tensor([1]), temperature=temperature)
        assert loss == pytest.approx(expected, abs=1e-5)
    # A lower temperature makes a correctly ranked prediction cheaper and a wrong one dearer.
    assert crossentropy_loss(unit(60), LABELS, torch.tensor([1]), temperature=0.05) < 0.001
    assert crossentropy_loss(unit(60), LABELS, torch.tensor([0]), temperature=0.05) > 7


def test_random_wrong_labels_are_never_the_true_label_and_cover_the_rest():
    labels = torch.zeros(3000, dtype=torch.int64)
    wrong = random_wrong_labels(labels, 4, torch.Generator().manual_seed(1))
    assert (wrong != labels).all()
    assert set(wrong.tolist()) == {1, 2, 3}


def test_rank_loss_sums_margin_violations_over_wrong_labels():
    # Prediction at 60 degrees, true label 1 (cos 0.866); wrong: 0 (cos 0.5), 2 (cos -0.5).
    right, wrong0, wrong2 = math.cos(math.radians(30)), 0.5, -0.5
    for margin in (0.1, 0.5, 1.0):
        expected = max(0, margin - right + wrong0) + max(0, margin - right + wrong2)
        assert rank_loss(unit(60), LABELS, torch.tensor([1]), margin=margin) == pytest.approx(expected, abs=1e-5)
    # Zero exactly when every wrong label is at least the margin below the right one.
    assert rank_loss(unit(90), LABELS, torch.tensor([1]), margin=0.999) == pytest.approx(0.0, abs=1e-6)
    assert rank_loss(unit(90), LABELS, torch.tensor([1]), margin=1.01) > 0


def test_losses_are_averaged_over_the_batch_and_differentiable():
    predicted = F.normalize(torch.randn(8, 2), dim=1).requires_grad_()
    labels = torch.randint(0, 3, (8,))
    for name in ("cosine", "hinge", "rank"):
        loss = get_loss(name)(predicted, LABELS, labels, margin=0.1)
        loss.backward()
        assert loss.dim() == 0 and predicted.grad is not None
    with pytest.raises(DeviseError, match="unknown loss"):
        get_loss("triplet")


def test_hit_at_k_matches_a_brute_force_argsort():
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(500, 37, generator=generator)
    labels = torch.randint(0, 37, (500,), generator=generator)
    result = hit_at_k(scores, labels, (1, 2, 3, 5, 10, 20))
    ranks = (scores.argsort(dim=1, descending=True) == labels[:, None]).float().argmax(dim=1)
    for k in (1, 2, 3, 5, 10, 20):
        assert result[f"hit@{k}"] == pytest.approx(float((ranks < k).float().mean()))
    assert chance_hit_at_k(200)["hit@5"] == 0.025


@pytest.mark.parametrize("group", [3, 64])
@pytest.mark.parametrize("chunk_size", [7, 100, 5000])
def test_chunked_ranking_equals_brute_force(chunk_size, group):
    generator = torch.Generator().manual_seed(4)
    queries = torch.randn(50, 16, generator=generator)
    vocabulary = torch.randn(1234, 16, generator=generator)
    scores, index = rank_topk(queries, vocabulary, k=10, chunk_size=chunk_size, group=group)
    brute = F.normalize(queries, dim=1) @ F.normalize(vocabulary, dim=1).T
    expected = brute.topk(10, dim=1)
    assert torch.equal(index, expected.indices)
    assert torch.allclose(scores, expected.values, atol=1e-6)


def test_near_ties_that_the_bf16_screen_cannot_settle_are_ranked_exactly(monkeypatch):
    # 30 directions, each in every group of words with tiny noise: all groups have near-equal best
    # scores, closer than bf16 can tell apart, so the screen cannot prove its top k for most queries.
    generator = torch.Generator().manual_seed(5)
    directions = torch.randn(30, 50, generator=generator).repeat(100, 1)
    vocabulary = F.normalize(directions + 1e-4 * torch.randn(3000, 50, generator=generator), dim=1)
    queries = F.normalize(torch.randn(40, 50, generator=generator), dim=1)
    exact_rows = []
    original = rank.exact_topk
    monkeypatch.setattr(rank, "exact_topk", lambda q, *args: exact_rows.append(len(q)) or original(q, *args))
    monkeypatch.setattr(rank, "bf16_native", lambda device: True)  # the bf16 screen, on any host
    scores, index = rank.rank_topk(queries, vocabulary, k=10, normalized=True, group=8)
    brute = queries @ vocabulary.T
    expected = brute.topk(10, dim=1).values
    assert sum(exact_rows) > 0, "the fallback ran"
    # Words this close can swap places between two float32 summation orders: compare their scores.
    assert torch.allclose(brute.gather(1, index), expected, atol=1e-6)
    assert torch.allclose(scores, expected, atol=1e-6)


@pytest.mark.parametrize("dim", [16, 50, 384])
def test_the_bf16_screen_stays_within_its_error_bound(dim):
    generator = torch.Generator().manual_seed(6)
    vocabulary = F.normalize(torch.randn(64 * 50, dim, generator=generator), dim=1)
    queries = F.normalize(torch.randn(30, dim, generator=generator), dim=1)
    maxima = rank.group_maxima(queries, vocabulary.to(torch.bfloat16), chunk_size=640, group=64)
    exact = (queries @ vocabulary.T).view(30, 50, 64).amax(dim=2)
    assert (maxima - exact).abs().max() <= rank.screening_error(dim)
