"""Sizing the whole experiment to a time budget: by hand, by stage, at the speed the first stage ran."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from devise.config import TrainConfig
from devise.errors import DeviseError
from devise.experiment import budget


def test_budget_sizing_by_hand():
    stage = TrainConfig(epochs=2, batch_size=100)
    speeds = budget.Speeds(train=1000.0, train_small=None, frozen=1500.0, forward=2000.0, head=6000.0)
    work = budget.Workload(train_images=10_000, val_images=1_000, after_images=4_000)
    fixed = budget.FIXED_SECONDS + 4_000 / 2000 + 2 * budget.EPOCH_SECONDS
    # The whole preset: fixed + 2 epochs x (10,000 / 1,000 + 1,000 / 2,000) seconds.
    assert budget.estimate_seconds([stage], speeds, work, 1.0) == pytest.approx(fixed + 21)
    roomy = budget.plan_budget((fixed + 21) / budget.SAFETY + 1, [stage], speeds, work, batch_size=100)
    assert (roomy.fraction, roomy.epoch_images, roomy.val_images) == (1.0, 0, 0)
    # Two seconds to spare after the fixed costs: 2 / 21 of each epoch, rounded down to whole batches.
    tight = budget.plan_budget((fixed + 2) / budget.SAFETY, [stage], speeds, work, batch_size=100)
    assert tight.epoch_images == 900 and tight.val_images == 90
    assert tight.planned_seconds == pytest.approx(fixed + 2 * (0.9 + 0.045))
    assert tight.planned_seconds <= (fixed + 2) and budget.estimate_seconds(
        [stage], speeds, work, 1000 / 10_000) > fixed + 2, "one more batch an epoch would not fit"
    with pytest.raises(DeviseError, match="too short for this preset on this host"):
        budget.plan_budget(fixed / budget.SAFETY, [stage], speeds, work, batch_size=100)
    assert budget.plan_budget(fixed / budget.SAFETY, [stage], speeds, work, batch_size=100, at_least_one_batch=True).epoch_images == 100


def test_stages_with_held_out_classes_are_costed_with_their_class_splits():
    speeds = budget.Speeds(train=1000.0, train_small=None, frozen=1500.0, forward=2000.0, head=6000.0)
    work = budget.Workload(train_images=10_000, val_images=1_000, after_images=0, seen_classes=180)
    frozen = TrainConfig(head="embedding", epochs=2, freeze_epochs=2, init="x", unseen=20)
    # Features of half the epoch's images and half the validation images at 2,000 images/s, then
    # 3 splits x 2 epochs x 5,000 images through a last layer alone at 6,000 images/s.
    assert budget.calibration_seconds(frozen, speeds, work, 0.5) == pytest.approx(5_500 / 2000 + 6 * 5_000 / 6000)
    assert budget.calibration_seconds(replace(frozen, freeze_epochs=1), speeds, work, 0.5) == 0.0  # its body trained
    assert budget.calibration_seconds(replace(frozen, unseen=0), speeds, work, 0.5) == 0.0
    # The softmax stage's splits (ConSE's constant, chosen in zero-shot) redo its last layer for its epochs.
    softmax = TrainConfig(head="softmax", epochs=4, unseen=20)
    assert budget.calibration_seconds(softmax, speeds, work, 0.5) == pytest.approx(5_500 / 2000 + 12 * 5_000 / 6000)


def test_the_second_stage_is_sized_at_the_speed_the_first_really_ran():
    speeds = budget.Speeds(train=1000.0, train_small=500.0, frozen=1500.0, forward=2000.0, head=6000.0)
    slower = budget.rescale(speeds, observed_train=800.0)
    assert (slower.train, slower.train_small, slower.frozen, slower.forward, slower.head) == (800, 400, 1200, 1600, 4800)


def test_frozen_and_small_epochs_are_costed_at_their_own_speeds():
    speeds = budget.Speeds(train=100.0, train_small=400.0, frozen=500.0, forward=1000.0, head=4000.0)
    stage = TrainConfig(epochs=3, small_epochs=1, small_size=16, freeze_epochs=0)
    assert [budget.epoch_seconds(stage, e, speeds, 1000) for e in range(3)] == [2.5, 10, 10]
    frozen = TrainConfig(epochs=2, freeze_epochs=1, init="x")
    assert [budget.epoch_seconds(frozen, e, speeds, 1000) for e in range(2)] == [2, 10]


def test_a_budget_too_short_for_the_host_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "devise", "reproduce", "--preset", "demo", "--budget", "0.1",
                             "--out", str(tmp_path / "r"), "--quiet"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "too short for this preset on this host" in result.stderr
