"""The steps of training, shared by the loop, the calibration's class splits and the budget's
timing: the optimiser and its schedule, one step, one epoch, an evaluation pass."""

from __future__ import annotations

import math

import torch

from devise.config import TrainConfig
from devise.data.base import ImageSet
from devise.data.pipeline import BatchLoader, FeatureBatches
from devise.hardware import Distributed, autocast
from devise.log import progress_bar
from devise.model.network import VisualNet
from devise.model.topk import topk_counts
from devise.training.objectives import SoftmaxTeacher


def first_images(data: ImageSet, count: int) -> ImageSet:
    """The set's first `count` images (all of them when `count` is 0 or at least the set's size):
    what a `--train-limit` trial trains on."""
    if not count or count >= len(data):
        return data
    return data.subset(torch.arange(count))


def evenly_spaced(data: ImageSet, count: int) -> ImageSet:
    """`count` images spread evenly over the set (all of them when `count` is 0 or more)."""
    if not count or count >= len(data):
        return data
    return data.subset(torch.linspace(0, len(data) - 1, count).round().long())


def make_optimizer(config: TrainConfig, model: VisualNet) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum or Adam; no weight decay on biases and normalisation weights."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() > 1], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
    if config.optimizer == "adam":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The rate at a global step: a plain function of the step, so resuming needs no state."""
    progress = step / max(1, config.epochs * steps_per_epoch)
    if config.schedule == "onecycle":
        if progress < config.warmup:
            return config.lr * (0.04 + 0.96 * progress / config.warmup)
        return config.lr * max(0.0, (1 - progress) / (1 - config.warmup))
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if config.schedule == "step":
        return config.lr * config.step_gamma ** (step // steps_per_epoch // config.step_epochs)
    return config.lr


def set_body_frozen(model: VisualNet, frozen: bool) -> None:
    """Freeze the body's weights and batch-norm statistics, or release them."""
    model.body.requires_grad_(not frozen)
    if frozen:
        model.body.eval()


@torch.no_grad()
def body_features(model: VisualNet, images: torch.Tensor, bf16: bool) -> torch.Tensor:
    with autocast(images.device, bf16):
        return model.body(images)


def head_dropout(features: torch.Tensor, rate: float) -> torch.Tensor:
    """The dropout before the head, for a head trained on a frozen body's features: the body runs
    as at inference (batch norm's running statistics, its own dropout off), and the head still
    gets the dropout that `--dropout` puts before it."""
    return torch.nn.functional.dropout(features, rate, training=True)


def training_step(model: torch.nn.Module, objective, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                  targets: torch.Tensor, *, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on one batch (forward under bf16 autocast if asked); (outputs, loss).
    `targets` are class indices, or class probabilities for a loss that takes them."""
    with autocast(images.device, bf16):
        outputs = model(images)
    loss = objective.loss(outputs, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return outputs, loss


def batch_totals(objective, outputs: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """[loss x images, top-1 hits, top-5 hits, images] of one batch, on its device: summed over
    an epoch (and over processes) before anything waits for the device."""
    counts = topk_counts(objective.class_scores(outputs.detach()), labels, (1, 5))
    return torch.cat([(loss.detach().double() * len(labels)).view(1), counts.double(),
                      torch.full((1,), len(labels), dtype=torch.float64, device=labels.device)])


def mean_figures(totals: torch.Tensor | None, dist: Distributed) -> dict[str, float]:
    """Mean loss, top-1 and top-5 from summed `batch_totals`, over every process's share."""
    loss, top1, top5, count = dist.sum(totals.tolist() if totals is not None else [0.0] * 4)
    count = max(count, 1)
    return {"loss": loss / count, "top1": top1 / count, "top5": top5 / count, "images": int(count)}


def train_one_epoch(model: VisualNet, loader: BatchLoader | FeatureBatches, objective, optimizer: torch.optim.Optimizer,
                    config: TrainConfig, epoch: int, *, progress: bool, teacher: SoftmaxTeacher | None = None,
                    dist: Distributed = Distributed()) -> dict[str, float]:
    """One pass over the training batches; returns mean loss, top-1, top-5, images and last rate.
    A `FeatureBatches` loader gives a frozen body's cached features instead of images.
    With a teacher, the loss is against its soft targets; top-k still counts the true labels.
    With several processes, each steps on its share of every batch and DistributedDataParallel
    averages the gradients; the figures are over all processes."""
    torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout and negatives, reproducible on resume
    loader.set_epoch(epoch)
    model.train()
    frozen = epoch < config.freeze_epochs
    set_body_frozen(model, frozen)
    # A frozen body's output is fixed: compute it once outside autograd and train the head on it.
    step_model = dist.wrap(model.head if frozen else model)
    steps_per_epoch = len(loader)
    totals, lr = None, config.lr
    bar = progress_bar(loader, progress, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, unit="batch")
    for step, (images, labels) in enumerate(bar):
        lr = learning_rate(config, epoch * steps_per_epoch + step, steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        features = (images if isinstance(loader, FeatureBatches) else body_features(model, images, config.bf16)
                    if frozen else None)
        inputs = head_dropout(features, config.dropout) if frozen else images
        if teacher is None:
            targets = labels
        elif frozen:  # the body is the teacher's own: its features serve both
            targets = teacher.targets(features, labels, from_features=True)
        else:
            targets = teacher.targets(images, labels)
        outputs, loss = training_step(step_model, objective, optimizer, inputs, targets, bf16=config.bf16)
        batch = batch_totals(objective, outputs, labels, loss)
        totals = batch if totals is None else totals + batch
        if not getattr(bar, "disable", True) and step % 10 == 0:  # reading the figures waits for the device
            bar.set_postfix(loss=f"{float(totals[0] / totals[3]):.3f}", top1=f"{float(totals[1] / totals[3]):.3f}")
    return {**mean_figures(totals, dist), "lr": lr}


def evaluate(model: torch.nn.Module, loader: BatchLoader, objective, *, bf16: bool = True,
             dist: Distributed = Distributed()) -> dict[str, float]:
    """Mean loss, top-1 and top-5 over a loader, without dropout or gradients."""
    model.eval()
    totals = None
    with torch.no_grad():
        for images, labels in loader:
            with autocast(images.device, bf16):
                outputs = model(images)
            batch = batch_totals(objective, outputs, labels, objective.loss(outputs, labels))
            totals = batch if totals is None else totals + batch
    return mean_figures(totals, dist)


def cpu_copy(state):
    """A state dict (nested dicts and lists of tensors) with every tensor on the CPU: a
    checkpoint does not depend on the device it was written on."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {key: cpu_copy(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(cpu_copy(value) for value in state)
    return state
