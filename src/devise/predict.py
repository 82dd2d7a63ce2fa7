"""Name any image with a trained run: the three-line Python API behind `devise predict`.

    from devise.predict import Predictor
    predictor = Predictor.load("runs/devise", vocabulary="train,words:20000", device="auto")
    predictor.predict(["tiger.jpg"], top=5)   # [[("tiger", 0.83), ("lion", 0.79), ...]]

An embedding run ranks the vocabulary by cosine similarity. A softmax run names its own
training labels by probability, or, with `conse=True`, ranks the vocabulary through ConSE.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from devise.data.sources import decode_image, square_resize
from devise.errors import DeviseError
from devise.hardware import autocast, inference_bf16
from devise.rank import rank_topk
from devise.train import Run, load_run
from devise.zeroshot import build_vocabulary, conse_vectors, label_space_of


class Predictor:
    """A run plus a vocabulary: images in, ranked labels with scores out."""

    def __init__(self, run: Run, vocabulary: str = "train", conse: bool = False, conse_top: int = 10,
                 vectors: str | None = None):
        self.run = run
        self.conse = conse
        self.conse_top = conse_top
        self.vocabulary = None
        if run.config.head == "embedding" or conse:
            space = label_space_of([run], vectors)
            self.training_vectors = space.embed(run.class_names, run.config.label_rule)
            self.vocabulary = build_vocabulary(space, {"train": run.class_names}, vocabulary, run.config.label_rule)

    @classmethod
    def load(cls, folder: str | Path, vocabulary: str = "train", device: str = "auto", **options) -> "Predictor":
        """A run folder's model on `device` (auto: a CUDA GPU if there is one, else the CPU)."""
        return cls(load_run(folder, device), vocabulary, **options)

    def image_tensor(self, images: list) -> torch.Tensor:
        """File paths, PIL images or uint8 arrays (H x W x C) -> a uint8 batch at the run's size."""
        size = self.run.config.image_size
        arrays = []
        for image in images:
            if isinstance(image, (str, Path)):
                path = Path(image)
                if not path.is_file():
                    raise DeviseError(f"{path}: no such image file")
                arrays.append(decode_image(path.read_bytes(), size, str(path)))
            elif isinstance(image, Image.Image):
                arrays.append(np.asarray(square_resize(image.convert("RGB"), size)))
            else:
                arrays.append(np.asarray(square_resize(Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB"), size)))
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def predict(self, images: list, top: int = 5) -> list[list[tuple[str, float]]]:
        """For each image, the `top` best labels with their scores (cosine, or probability)."""
        device = self.run.device
        batch = self.run.normalizer.prepare(self.image_tensor(images).to(device))
        with autocast(device, inference_bf16(self.run.config.bf16, device)):
            outputs = self.run.model(batch).float().cpu()
        if self.vocabulary is None:  # softmax: its own labels by probability
            scores, index = outputs.softmax(dim=1).topk(min(top, outputs.shape[1]), dim=1)
            labels = self.run.class_names
        else:
            vectors = conse_vectors(outputs, self.training_vectors, self.conse_top) if self.run.config.head == "softmax" else outputs
            scores, index = rank_topk(vectors, self.vocabulary.vectors, top)
            labels = self.vocabulary.labels
        return [[(labels[i], float(s)) for i, s in zip(row_index.tolist(), row_scores.tolist())]
                for row_index, row_scores in zip(index, scores)]
