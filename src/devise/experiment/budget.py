"""Fit `devise reproduce` into a time budget on the host it runs on: measure, then size.

The same preset's time differs many-fold between hosts (bf16 native or not, AVX-512 or AVX2, a
GPU), so a few real steps are timed first (`devise.experiment.reproduce.measure_speeds`) and the
share of each epoch's images that fits is solved for from a time model (`estimate_seconds`: images
over measured images per second, per pass). Once the first stage is done, its own speed sizes the
second for the time left (`rescale`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from devise.config import TrainConfig, own_body
from devise.errors import DeviseError
from devise.training.calibration import SPLITS, class_split_applies

SAFETY = 0.85  # plan for this share of the time left: speeds drift, and the machine may be shared
FIXED_SECONDS = 20.0  # label spaces, report, interpreter: 13-15 s on a 2-core CPU beside the passes counted
EPOCH_SECONDS = 1.0  # an epoch's checkpoint, metrics and curves


@dataclass(frozen=True)
class Speeds:
    """Images per second on this host, measured: a training step at the run's image size, one at
    the small size of progressive resizing (None without it), a step of a frozen body (a forward
    pass at the training batch size, then the head's step), an evaluation forward pass, and a
    last layer's step on features already computed (what the class splits of calibrated stacking
    train)."""

    train: float
    train_small: float | None
    frozen: float
    forward: float
    head: float

    def scaled(self, factor: float) -> "Speeds":
        return Speeds(self.train * factor, self.train_small and self.train_small * factor, self.frozen * factor,
                      self.forward * factor, self.head * factor)


@dataclass(frozen=True)
class Workload:
    """How many images the preset trains, validates and evaluates."""

    train_images: int  # a full epoch
    val_images: int  # a full validation pass
    after_images: int  # forward passes after training: evaluation and zero-shot of both models
    seen_classes: int = 0  # the classes trained on (class splits need three)


@dataclass(frozen=True)
class Plan:
    """What a budget chose: the share of each epoch, and what it expects that to cost."""

    fraction: float  # of each epoch's training and validation images
    epoch_images: int  # 0: all
    val_images: int  # 0: all
    full_seconds: float  # the preset as it is, estimated
    planned_seconds: float  # with this plan, estimated

    def overrides(self) -> dict:
        return {"epoch_images": self.epoch_images, "val_images": self.val_images}


def cached_features(config: TrainConfig) -> bool:
    """Whether a stage trains its head on a frozen timm body's cached features
    (`devise.training.loop.frozen_features`)."""
    return not own_body(config) and config.freeze_epochs > 0


def feature_seconds(config: TrainConfig, speeds: Speeds, work: Workload, fraction: float) -> float:
    """Computing a frozen timm body's features once: each training image in each view (as is, and
    flipped with `flip`), and the validation images."""
    views = 2 if config.flip else 1
    return (views * fraction * work.train_images + fraction * work.val_images) / speeds.forward


def epoch_seconds(config: TrainConfig, epoch: int, speeds: Speeds, images: float) -> float:
    """Training time of one epoch of `images` images: a frozen body costs a forward pass (its head
    is tiny), or nothing once its features are cached; progressive resizing's small epochs run at
    the small size's speed."""
    if epoch < config.freeze_epochs and cached_features(config):
        return images / speeds.head
    if epoch < config.freeze_epochs:
        return images / speeds.frozen
    if epoch < config.small_epochs and speeds.train_small:
        return images / speeds.train_small
    return images / speeds.train


def calibration_seconds(config: TrainConfig, speeds: Speeds, work: Workload, fraction: float) -> float:
    """The class splits of a stage (`devise.training.calibration`: a frozen-body DeViSE stage's as it ends,
    the softmax stage's for ConSE in zero-shot): the body's features of an epoch's share of the
    training images and of half the validation images, then a last layer per split trained on them
    for the stage's epochs."""
    if not class_split_applies(config, work.seen_classes):
        return 0.0
    images = fraction * work.train_images
    features = 0.0 if cached_features(config) else (images + work.val_images / 2) / speeds.forward
    return features + SPLITS * config.epochs * images / speeds.head


def estimate_seconds(stages: list[TrainConfig], speeds: Speeds, work: Workload, fraction: float) -> float:
    """The whole job's seconds when each epoch trains and validates on `fraction` of its images."""
    seconds = FIXED_SECONDS + work.after_images / speeds.forward
    features_paid = False  # the stages share one body: its features are computed once
    for config in stages:
        seconds += calibration_seconds(config, speeds, work, fraction)
        if cached_features(config) and not features_paid:
            seconds += feature_seconds(config, speeds, work, fraction)
            features_paid = True
        for epoch in range(config.epochs):
            seconds += EPOCH_SECONDS + epoch_seconds(config, epoch, speeds, fraction * work.train_images)
            cached = epoch < config.freeze_epochs and cached_features(config)
            seconds += fraction * work.val_images / (speeds.head if cached else speeds.forward)
    return seconds


def plan_budget(budget_seconds: float, stages: list[TrainConfig], speeds: Speeds, work: Workload,
                *, batch_size: int, at_least_one_batch: bool = False) -> Plan:
    """The largest share of every epoch whose estimate fits `budget_seconds` x `SAFETY` (all of it
    when the preset fits as it is). The estimate is linear in the share, so it is solved for.
    When not even one batch an epoch fits: an error, or with `at_least_one_batch` that one batch
    (for a second stage, once the first has been paid for)."""
    full = estimate_seconds(stages, speeds, work, 1.0)
    fixed = estimate_seconds(stages, speeds, work, 0.0)
    available = budget_seconds * SAFETY
    if full <= available:
        return Plan(1.0, 0, 0, full, full)
    fraction = (available - fixed) / (full - fixed)
    epoch_images = math.floor(fraction * work.train_images / batch_size) * batch_size
    if epoch_images < batch_size and at_least_one_batch:
        epoch_images = batch_size
    if epoch_images < batch_size:
        need = (fixed + (full - fixed) * batch_size / work.train_images) / SAFETY / 60
        raise DeviseError(f"the {budget_seconds / 60:.2g} min left of the budget are too short for this preset on this host: "
                          f"even one batch an epoch needs about {need:.1f} min (the preset as it is: "
                          f"{full / 60:.0f} min)")
    fraction = epoch_images / work.train_images
    val_images = max(1, math.ceil(fraction * work.val_images))
    return Plan(fraction, epoch_images, val_images, full, estimate_seconds(stages, speeds, work, fraction))


def rescale(speeds: Speeds, observed_train: float) -> Speeds:
    """The measured speeds scaled by how fast full-size training really ran (images/s from a
    finished stage's epochs) against the first measurement."""
    return speeds.scaled(observed_train / speeds.train)


def describe(plan: Plan, speeds: Speeds, budget_seconds: float, host: str) -> str:
    """What the budget chose and why, in two lines."""
    measured = (f"measured on {host}: training {speeds.train:.0f} images/s"
                + (f" ({speeds.train_small:.0f} at the small size)" if speeds.train_small else "")
                + f", frozen body {speeds.frozen:.0f}, evaluation {speeds.forward:.0f}, a last layer alone "
                  f"{speeds.head:.0f} images/s")
    if plan.fraction >= 1:
        return (f"budget {budget_seconds / 60:.1f} min: {measured}; the preset as it is needs about "
                f"{plan.full_seconds / 60:.1f} min, so nothing is cut")
    return (f"budget {budget_seconds / 60:.1f} min: {measured}; the preset as it is would need about "
            f"{plan.full_seconds / 60:.1f} min,\nso every epoch trains on {plan.epoch_images:,} images and validates "
            f"on {plan.val_images:,} ({plan.fraction:.1%}), estimated {plan.planned_seconds / 60:.1f} min in all")
