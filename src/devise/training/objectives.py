"""What a head is trained to do, and how its outputs become class scores.

The training loop only calls `loss(outputs, labels)` and `class_scores(outputs)`, so the same
loop trains the softmax model and the DeViSE embedding model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from devise.hardware import autocast
from devise.training.losses import get_loss


class SoftmaxObjective:
    """Cross-entropy over class logits, optionally with label smoothing; scores are logits."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), labels, label_smoothing=self.label_smoothing)

    def class_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()


class EmbeddingObjective:
    """A named embedding loss against the training classes' label vectors; scores are cosine
    similarities to those vectors, so top-k is the paper's ranked lookup."""

    def __init__(self, label_vectors: torch.Tensor, loss: str = "hinge", margin: float = 0.1,
                 temperature: float = 0.05):
        self.label_vectors = F.normalize(label_vectors.float(), dim=1)
        self.loss_name = loss
        self.loss_fn = get_loss(loss)
        self.margin = margin
        self.temperature = temperature

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(outputs.float(), self.label_vectors, labels, margin=self.margin,
                            temperature=self.temperature)

    def class_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float() @ self.label_vectors.to(outputs.device).T


def objective_for(settings, label_vectors: torch.Tensor | None):
    """A run's objective: the softmax one, or with the training labels' vectors the embedding one."""
    if label_vectors is None:
        return SoftmaxObjective(settings.label_smoothing)
    return EmbeddingObjective(label_vectors, settings.loss, settings.margin, settings.temperature)


class SoftmaxTeacher:
    """A trained softmax model whose class probabilities are mixed into the DeViSE model's targets.

    Knowledge distillation (Hinton et al., 2015): the target of each image becomes
    `(1 - weight) * one-hot + weight * teacher probabilities`. The probabilities the teacher gives
    the wrong classes say which ones look alike, which is what hit@5 and hit@10 reward, and they
    steady a warm-started body while it adapts to the new head. Only the crossentropy loss takes
    such soft targets. A `temperature` above 1 divides the teacher's logits first, as Hinton et al.
    do, so that more of its probability reaches the runners-up.
    """

    def __init__(self, model: torch.nn.Module, weight: float, bf16: bool = True, temperature: float = 1.0):
        self.model = model.eval().requires_grad_(False)
        self.weight = weight
        self.bf16 = bf16
        self.temperature = temperature

    @torch.no_grad()
    def targets(self, inputs: torch.Tensor, labels: torch.Tensor, from_features: bool = False) -> torch.Tensor:
        """Soft targets for a batch of images, or of their body features when `from_features`
        (while the student's warm-started body is frozen it computes exactly the teacher's
        features, so only the teacher's last layer need run)."""
        with autocast(inputs.device, self.bf16):
            logits = self.model.head(inputs) if from_features else self.model(inputs)
        probabilities = (logits.float() / self.temperature).softmax(dim=1)
        return torch.lerp(F.one_hot(labels, probabilities.shape[1]).float(), probabilities, self.weight)
