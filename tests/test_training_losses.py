"""The losses a DeViSE head trains with, by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from devise.errors import DeviseError
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
