"""Held-out classes for zero-shot evaluation on the training dataset itself.

`--unseen K` removes K classes (chosen by a seeded draw) from training entirely; evaluation then
covers those classes alone (zero-shot) and all classes together (generalised zero-shot).
"""

from __future__ import annotations

import torch

from devise.data.base import ImageSet
from devise.errors import DeviseError


def choose_unseen(class_ids: list[str], count: int, seed: int) -> list[str]:
    """`count` class ids drawn without replacement by `seed`, in their dataset order."""
    if not 0 < count <= len(class_ids) - 2:
        raise DeviseError(f"--unseen must be between 1 and {len(class_ids) - 2} (two classes at least must be "
                          f"left to train on), not {count}")
    generator = torch.Generator().manual_seed(seed)
    chosen = set(torch.randperm(len(class_ids), generator=generator)[:count].tolist())
    return [class_id for i, class_id in enumerate(class_ids) if i in chosen]


def keep_classes(data: ImageSet, class_ids: list[str]) -> ImageSet:
    """Only the images of the given classes, relabelled 0..len(class_ids)-1 in dataset order."""
    wanted = [data.class_ids.index(c) for c in data.class_ids if c in set(class_ids)]
    remap = torch.full((data.num_classes,), -1, dtype=torch.int64)
    remap[torch.tensor(wanted, dtype=torch.int64)] = torch.arange(len(wanted))
    new_labels = remap[data.labels]
    mask = new_labels >= 0
    return ImageSet(data.images[mask], new_labels[mask], [data.class_names[i] for i in wanted], data.name,
                    [data.class_ids[i] for i in wanted], data.skipped)


def seen_classes(data: ImageSet, unseen: list[str]) -> list[str]:
    return [c for c in data.class_ids if c not in set(unseen)]
