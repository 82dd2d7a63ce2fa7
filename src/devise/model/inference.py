"""From images to ranked labels: the one place where a model's outputs become names.

Three kinds of model name an image:

- DeViSE (an embedding run): its output is a unit vector; the vocabulary is ranked by cosine;
- ConSE (Norouzi et al. 2014), from a softmax run: the probability-weighted mean of the vectors of
  its T most probable training labels, ranked the same way;
- softmax: its own training labels by probability; it can name nothing else.

`Predictor` is the Python API behind `devise predict`:

    from devise.model.inference import Predictor
    predictor = Predictor.load("runs/devise", vocabulary="train,words:20000", device="auto")
    predictor.predict(["tiger.jpg"], top=5)   # [[("tiger", 0.83), ("lion", 0.79), ...]]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from devise.config import own_body
from devise.data import BatchLoader, ImageSet
from devise.data.features import cached_features
from devise.data.pipeline import NO_AUGMENT
from devise.data.sources import decode_image, square_resize
from devise.errors import DeviseError
from devise.hardware import autocast, inference_bf16
from devise.hardware import freed_memory_kept
from devise.log import progress_bar
from devise.model.topk import rank_topk
from devise.training.runs import Run, cache_folder, load_run
from devise.labels.run_labels import RunLabels
from devise.labels.vocabulary import Vocabulary, build_vocabulary

CONSE_TOP = 10


def kind_of(run: Run, conse: bool = False) -> str:
    """"DeViSE" for an embedding run; for a softmax run "ConSE" if asked, else "softmax"."""
    if run.config.head == "embedding":
        return "DeViSE"
    return "ConSE" if conse else "softmax"


def model_outputs(run: Run, data: ImageSet | torch.Tensor, batch_size: int = 1000, progress: bool = True) -> torch.Tensor:
    """The model's raw outputs for every image (logits, or unit vectors for an embedding run), on
    the CPU, computed on the run's device in the precision `inference_bf16` chooses. `data` is an
    `ImageSet` or a uint8 batch (N x 3 x H x W) as the run keeps its images. A dataset through a
    timm body goes through its cached features (`body_outputs`)."""
    if isinstance(data, ImageSet) and not own_body(run.config):
        return head_outputs(run, body_outputs(run, data, batch_size, progress), batch_size)
    return forward_all(run, run.model, data, batch_size, progress)


def body_outputs(run: Run, data: ImageSet, batch_size: int = 1000, progress: bool = True) -> torch.Tensor:
    """The run's body's features of every image of a dataset, on the CPU, as its head sees them
    at inference: a timm body's computed once and cached (`devise.data.features`), devise's own
    small body's computed again."""
    if own_body(run.config):
        return forward_all(run, run.model.body, data, batch_size, progress)
    bf16 = inference_bf16(run.config.bf16, run.device)
    return cached_features(run.model.body, run.preprocess, data, device=run.device, bf16=bf16, batch_size=batch_size,
                           progress=progress, what=run.config.body, cache_dir=cache_folder(run.config))[0].float()


@torch.no_grad()
def head_outputs(run: Run, features: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The run's head on body features, in batches, on the CPU."""
    run.model.eval()
    return torch.cat([run.model.head(features[start : start + batch_size].to(run.device)).float().cpu()
                      for start in range(0, len(features), batch_size)]) if len(features) else features


def forward_all(run: Run, network: torch.nn.Module, data: ImageSet | torch.Tensor, batch_size: int,
                progress: bool) -> torch.Tensor:
    """`network` (the run's model or its body) on every image, batch by batch, on the CPU."""
    if isinstance(data, torch.Tensor):
        data = ImageSet(data, torch.zeros(len(data), dtype=torch.int64), ["image"])
    device = run.device
    loader = BatchLoader(data.to(device), batch_size, run.preprocess, augment=NO_AUGMENT)
    outputs = []
    network.eval()
    with freed_memory_kept(), torch.no_grad(), autocast(device, inference_bf16(run.config.bf16, device)):
        for images, _ in progress_bar(loader, progress, desc=f"evaluating {run.folder.name}", unit="batch"):
            outputs.append(network(images).float().cpu())
    return torch.cat(outputs)


def conse_vectors(logits: torch.Tensor, label_vectors: torch.Tensor, top: int = CONSE_TOP) -> torch.Tensor:
    """ConSE: sum over the T most probable training labels of p(label) * vector, normalised.

    Dividing by the sum of those T probabilities (Norouzi et al.'s Z) does not change the
    direction, so the unit result is the same either way.
    """
    probabilities = logits.float().softmax(dim=1)
    p, index = probabilities.topk(min(top, probabilities.shape[1]), dim=1)
    return F.normalize((p[:, :, None] * label_vectors[index]).sum(dim=1), dim=1)


def query_vectors(kind: str, outputs: torch.Tensor, training_vectors: torch.Tensor,
                  conse_top: int = CONSE_TOP) -> torch.Tensor | None:
    """The vectors DeViSE and ConSE rank a vocabulary with; None for softmax, which ranks its own labels."""
    if kind == "DeViSE":
        return F.normalize(outputs.float(), dim=1)
    if kind == "ConSE":
        return conse_vectors(outputs, training_vectors, conse_top)
    return None


def top_labels(kind: str, outputs: torch.Tensor, training_vectors: torch.Tensor, candidates: torch.Tensor, k: int,
               conse_top: int = CONSE_TOP) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices) of each image's k best labels, best first: cosines to the `candidates`
    rows for DeViSE and ConSE, probabilities over its training labels for softmax."""
    queries = query_vectors(kind, outputs, training_vectors, conse_top)
    if queries is None:  # ranked by logit, scored by probability
        top = outputs.float().topk(min(k, outputs.shape[1]), dim=1)
        return outputs.float().softmax(dim=1).gather(1, top.indices), top.indices
    return rank_topk(queries, candidates, k)


def image_batch(images: list, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """File paths, PIL images or uint8 arrays (H x W x C) -> a uint8 batch of `size` px squares
    (the shorter side scaled to `size`, the centre square cut)."""
    arrays = []
    for image in images:
        if isinstance(image, (str, Path)):
            path = Path(image)
            if not path.is_file():
                raise DeviseError(f"{path}: no such image file")
            arrays.append(decode_image(path.read_bytes(), size, str(path), interpolation))
        elif isinstance(image, Image.Image):
            arrays.append(np.asarray(square_resize(image.convert("RGB"), size, interpolation)))
        else:
            rgb = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
            arrays.append(np.asarray(square_resize(rgb, size, interpolation)))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class Predictor:
    """A run plus a vocabulary: images in, ranked labels with scores out."""

    def __init__(self, run: Run, vocabulary: str = "train", conse: bool = False, conse_top: int = CONSE_TOP,
                 replacements: str | None = None, vectors: str | None = None):
        self.run = run
        self.kind = kind_of(run, conse)
        self.conse_top = conse_top
        self.labels: RunLabels | None = None
        self.vocabulary: Vocabulary | None = None
        if self.kind != "softmax":
            self.labels = run.label_space(replacements, vectors if self.kind == "ConSE" else None)
            self.vocabulary = build_vocabulary(self.labels, {"train": run.class_names}, vocabulary,
                                               {"train": run.class_ids})

    @classmethod
    def load(cls, folder: str | Path, vocabulary: str = "train", device: str = "auto", **options) -> "Predictor":
        """A run folder's model on `device` (auto: a CUDA GPU if there is one, else the CPU)."""
        return cls(load_run(folder, device), vocabulary, **options)

    def image_tensor(self, images: list) -> torch.Tensor:
        preprocess = self.run.preprocess
        return image_batch(images, preprocess.resize or self.run.config.image_size, preprocess.interpolation)

    @torch.no_grad()
    def predict(self, images: list, top: int = 5) -> list[list[tuple[str, float]]]:
        """For each image, the `top` best labels with their scores (cosine, or probability)."""
        if top <= 0:
            raise DeviseError(f"--top must be positive, not {top}")
        outputs = model_outputs(self.run, self.image_tensor(images), progress=False)
        if self.vocabulary is None:
            scores, index = top_labels(self.kind, outputs, None, None, top)
            labels = self.run.class_names
        else:
            training = self.labels.embed(self.run.class_names, self.run.class_ids)
            scores, index = top_labels(self.kind, outputs, training, self.vocabulary.vectors, top, self.conse_top)
            labels = self.vocabulary.labels
        return [[(labels[i], float(s)) for i, s in zip(row_index.tolist(), row_scores.tolist())]
                for row_index, row_scores in zip(index, scores)]
