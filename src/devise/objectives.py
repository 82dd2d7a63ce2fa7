"""What a head is trained to do, and how its outputs become class scores.

The training loop only calls `loss(outputs, labels)` and `class_scores(outputs)`, so the same
loop trains the softmax model and the DeViSE embedding model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class SoftmaxObjective:
    """Cross-entropy over class logits, optionally with label smoothing."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), labels, label_smoothing=self.label_smoothing)

    def class_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()
