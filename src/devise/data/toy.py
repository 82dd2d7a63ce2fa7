"""A generated dataset of coloured shapes whose labels are real words ("red square").

It needs no download, trains in seconds, and because its labels have word vectors, it exercises
the whole DeViSE pipeline, zero-shot included: hold out "green triangle" and the model can still
name it from "green" and "triangle".
"""

from __future__ import annotations

import math

import torch

from devise.data.base import ImageSet

COLOURS = {
    "red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (235, 215, 30),
    "purple": (140, 40, 170), "orange": (245, 140, 20), "white": (245, 245, 245), "black": (15, 15, 15),
}
SHAPES = ("square", "circle", "triangle", "cross", "ring")
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def toy_class_names(colours: tuple[str, ...] = tuple(COLOURS), shapes: tuple[str, ...] = SHAPES) -> list[str]:
    return [f"{colour} {shape}" for colour in colours for shape in shapes]


def load_toy(split: str = "train", per_class: int = 40, size: int = 32, seed: int = 0,
             colours: tuple[str, ...] = tuple(COLOURS), shapes: tuple[str, ...] = SHAPES) -> ImageSet:
    """`per_class` images of every colour x shape class, on a noisy grey background.

    Position, size and background vary per image; the same (split, seed) gives the same pixels.
    """
    generator = torch.Generator().manual_seed(seed * 1000 + SPLIT_SEEDS.get(split, 3))
    names = toy_class_names(colours, shapes)
    count = per_class * len(names)
    labels = torch.arange(len(names)).repeat_interleave(per_class)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    centre = size * (0.3 + 0.4 * torch.rand(count, 2, generator=generator))
    radius = size * (0.18 + 0.12 * torch.rand(count, generator=generator))
    dy = (ys - centre[:, 0, None, None]) / radius[:, None, None]
    dx = (xs - centre[:, 1, None, None]) / radius[:, None, None]
    masks = {
        "square": (dx.abs() <= 0.8) & (dy.abs() <= 0.8),
        "circle": dx**2 + dy**2 <= 1.0,
        "triangle": (dy <= 0.8) & (dy >= -0.9 + 2 * dx.abs() * math.sqrt(3) / 2 * 1.2),
        "cross": ((dx.abs() <= 0.3) & (dy.abs() <= 1.0)) | ((dy.abs() <= 0.3) & (dx.abs() <= 1.0)),
        "ring": (dx**2 + dy**2 <= 1.0) & (dx**2 + dy**2 >= 0.45),
    }
    shape_of = torch.tensor([shapes.index(n.split(" ")[1]) for n in names])[labels]
    colour_of = torch.tensor([colours.index(n.split(" ")[0]) for n in names])[labels]
    shape_mask = torch.zeros(count, size, size, dtype=torch.bool)
    for i, shape in enumerate(shapes):
        chosen = shape_of == i
        shape_mask[chosen] = masks[shape][chosen]
    background = 90 + 60 * torch.rand(count, 1, 1, 1, generator=generator)
    images = background + 12 * torch.randn(count, 3, size, size, generator=generator)
    rgb = torch.tensor([COLOURS[c] for c in colours], dtype=torch.float32)[colour_of]
    images = torch.where(shape_mask[:, None], rgb[:, :, None, None], images)
    images = images.round().clamp(0, 255).to(torch.uint8)
    order = torch.randperm(count, generator=generator)
    return ImageSet(images[order], labels[order], names, "toy")
