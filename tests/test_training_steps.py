"""The steps the training loop is made of: a step lowers the loss, the rate schedules, the counts."""

from __future__ import annotations

import pytest
import torch

import devise.training.loop as training
from devise.config import TrainConfig
from devise.data import load_dataset
from devise.data.pipeline import BatchLoader
from devise.data.preprocess import Preprocess
from devise.model.network import ModelSpec, create_model
from devise.training import steps
from devise.training.objectives import SoftmaxObjective


def test_a_few_steps_lower_the_loss_on_the_toy_set():
    torch.manual_seed(0)
    data = load_dataset("toy", split="train")
    model = create_model(ModelSpec("cnn", width=8, hidden=32, dropout=0.0), data.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    objective = SoftmaxObjective()
    images, labels = next(iter(BatchLoader(data, 256, Preprocess.fit(data.images), shuffle=True)))
    losses = []
    for _ in range(15):
        loss = objective.loss(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]


def test_learning_rate_schedules():
    config = TrainConfig(epochs=4, lr=1.0, schedule="onecycle", warmup=0.25)
    rates = [steps.learning_rate(config, step, 10) for step in range(40)]
    assert rates[0] == pytest.approx(0.04) and max(rates) == pytest.approx(1.0) and rates[-1] < 0.05
    step = TrainConfig(epochs=4, lr=1.0, schedule="step", step_epochs=2, step_gamma=0.1)
    assert [steps.learning_rate(step, s, 10) for s in (0, 19, 20, 39)] == pytest.approx([1, 1, 0.1, 0.1])
    cosine = TrainConfig(epochs=4, lr=1.0, schedule="cosine")
    assert steps.learning_rate(cosine, 0, 10) == 1.0 and steps.learning_rate(cosine, 20, 10) == pytest.approx(0.5)


def test_evaluation_counts_top1_and_top5():
    model = torch.nn.Identity()
    # The first image's label scores highest; the second's lowest of six, so it is not in the top 5.
    loader = [(torch.tensor([[0, 1, 2, 3, 4, 9.0], [9, 0, 1, 2, 3, 4.0]]), torch.tensor([5, 1]))]
    result = training.evaluate(model, loader, SoftmaxObjective(), bf16=False)
    assert result["top1"] == 0.5 and result["top5"] == 0.5
    # Once the second image's label moves up to fifth place it counts for top-5, not top-1.
    loader = [(torch.tensor([[0, 1, 2, 3, 4, 9.0], [9, 1.5, 1, 2, 3, 4.0]]), torch.tensor([5, 1]))]
    result = training.evaluate(model, loader, SoftmaxObjective(), bf16=False)
    assert result["top1"] == 0.5 and result["top5"] == 1.0
