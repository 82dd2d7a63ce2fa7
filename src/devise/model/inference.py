"""From images to ranked labels: `DeviseModel`, the one inference API, and the ranking it uses.

DeViSE (an embedding model) ranks labels by cosine to its output vector; ConSE (Norouzi et al.
2014, from a softmax model) by cosine to the probability-weighted mean of its top T training
labels' vectors (`conse_vectors`, which the ONNX export runs too); softmax ranks its own training
labels by probability.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from devise.config import TrainConfig
from devise.data.base import ImageSet
from devise.data.features import cached_features
from devise.data.preprocess import Preprocess
from devise.data.sources import decode_image, opened_image, square_resize
from devise.errors import DeviseError
from devise.hardware import check_precision, exact_float32, freed_memory_kept, inference_autocast, inference_bf16
from devise.labels.run_labels import RunLabels, run_labels
from devise.labels.vocabulary import Vocabulary, build_vocabulary, check_vocabulary, unique_labels
from devise.log import progress_bar
from devise.model.network import VisualNet
from devise.model.topk import rank_topk

CONSE_TOP = 10
METHODS = {"devise": "DeViSE", "conse": "ConSE", "softmax": "softmax"}  # classify's methods and their names
BATCH_SIZE = 256  # images a forward pass: memory stays bounded however many images are given


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


class DeviseModel:
    """A trained network with its label space: images and label text in, unit vectors and ranked
    labels out; the one way from images to ranked labels (DeViSE, ConSE, softmax) for `predict`,
    `evaluate`, `zeroshot`, `serve` and the ONNX export. Built by `devise.load`: an exported folder,
    a run folder (then `settings` and `folder` say what it was trained with and where it lives) or
    a pretrained classifier devise knows by name (`stock`). `precision`: "float32" (the default:
    the vectors its ONNX export and any other host give), "bf16", or "auto" (bf16 where native)."""

    def __init__(self, network: VisualNet, config: dict, device: torch.device, *, vectors_path: str | None = None,
                 settings: TrainConfig | None = None, folder: Path | None = None, precision: str = "float32"):
        self.network = network.to(device).eval()
        self.precision = check_precision(precision)
        self.config = config
        self.device = device
        self.settings = settings  # a run folder's TrainConfig; None for an exported folder or a stock classifier
        self.folder = folder
        self.labels: list[str] = list(config["labels"])
        self.label_vectors = torch.tensor(config["label_vectors"], dtype=torch.float32).reshape(len(self.labels), -1)
        self.image_size: int = int(config["image_size"])
        normalizer = config["normalizer"]
        self.preprocess = (Preprocess.from_record(config["preprocess"]) if config.get("preprocess")
                           else Preprocess(tuple(normalizer["mean"]), tuple(normalizer["std"])))
        self.vectors_path = vectors_path
        self.vectors_problem: str | None = None  # why an exported folder's vectors file cannot be read, if so
        self.text_labels: RunLabels | None = None  # the label space, loaded on first use

    def __repr__(self) -> str:
        return (f"DeviseModel({self.kind}, {body_label(self.config)} at {self.image_size} px, "
                f"{len(self.labels)} labels in {self.label_space_name}, {self.device})")

    @property
    def name(self) -> str:
        """What the model is called in results: its run folder's name, or the pretrained one's."""
        return self.folder.name if self.folder is not None else str(self.config.get("run", "model"))

    @property
    def stock(self) -> bool:
        """A pretrained classifier loaded by name, not a model devise trained."""
        return bool(self.config.get("stock"))

    @property
    def label_ids(self) -> list[str] | None:
        """The training labels' ids (WordNet ids for Tiny ImageNet), where known."""
        return self.config.get("label_ids")

    @property
    def body_trained_on(self) -> dict | None:
        """{"description", "ids"}: the classes the body has been trained on (ids None: not known)."""
        return self.config.get("body_trained_on")

    @property
    def kind(self) -> str:
        """"embedding" (DeViSE) or "softmax"."""
        return self.config["kind"]

    @property
    def methods(self) -> tuple[str, ...]:
        """How this model can classify: an embedding model by DeViSE, a softmax model by ConSE or softmax."""
        return ("devise",) if self.kind == "embedding" else ("conse", "softmax")

    @property
    def label_space_name(self) -> str:
        return self.config["label_space"]["name"]

    @property
    def dim(self) -> int:
        return self.label_vectors.shape[1]

    @property
    def conse_top(self) -> int:
        """ConSE's T: how many of a softmax model's most probable labels its vector mixes."""
        return int(self.config.get("conse_top", CONSE_TOP))

    # -----------------------------------------------------------------------------------------
    # Images

    @property
    def bf16(self) -> bool:
        """Whether inference runs in bf16: as `precision` says (`hardware.inference_bf16`), whatever
        precision the model was trained in."""
        return inference_bf16(self.precision, self.device)

    @torch.no_grad()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """One uint8 batch, as the pipeline takes it -> raw outputs (unit vectors or logits) on the CPU."""
        images = self.preprocess.prepare(batch.to(self.device))
        with inference_autocast(self.device, self.bf16):
            return self.network(images).float().cpu()

    def dataset_outputs(self, data: ImageSet, batch_size: int = 1000, progress: bool = True,
                        cache_dir: str | Path | None = None) -> torch.Tensor:
        """Raw outputs for every image of a dataset (as the model keeps its images: `stored_size`).
        Through a timm body, its features are computed once and cached (`devise.data.features`)."""
        if self.preprocess.size is None:  # devise's own small body: computed again, batch by batch
            return network_outputs(self.network, self.preprocess, data.images, device=self.device, bf16=self.bf16, batch_size=batch_size,
                                   progress=progress, desc=f"evaluating {self.name}")
        return head_outputs(self.network.head, self.body_outputs(data, batch_size, progress, cache_dir), self.device,
                            batch_size)

    def body_outputs(self, data: ImageSet, batch_size: int = 1000, progress: bool = True,
                     cache_dir: str | Path | None = None) -> torch.Tensor:
        """The body's features of every image of a dataset, on the CPU, as the head sees them."""
        return dataset_features(self.network, self.preprocess, data, device=self.device, bf16=self.bf16,
                                batch_size=batch_size, progress=progress, cache_dir=cache_dir,
                                what=body_label(self.config))

    def class_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """Scores over the training labels: logits, or cosines to the training labels' vectors."""
        return outputs.float() if self.kind == "softmax" else outputs.float() @ self.label_vectors.T

    def encode_image(self, images, method: str | None = None, batch_size: int = BATCH_SIZE,
                     conse_top: int | None = None) -> torch.Tensor:
        """Unit vectors in the label space, one row per image: the network's own output (DeViSE)
        or, for a softmax model, its ConSE vector. `images`: file paths, PIL images, H x W x C
        uint8 arrays, or a tensor N x 3 x H x W (or 3 x H x W), uint8 0-255 or float in [0, 1] as
        torchvision gives (any size: resized and centre-cropped)."""
        name = METHODS[self.check_method(method, ("devise", "conse"))]
        conse_top = conse_top or self.conse_top
        rows = [query_vectors(name, self.forward(batch), self.label_vectors, conse_top)
                for batch in self.image_batches(images, batch_size)]
        return torch.cat(rows)

    def image_batches(self, images, batch_size: int = BATCH_SIZE) -> Iterator[torch.Tensor]:
        """uint8 batches of the images as the model's pipeline takes them: squares of its resize
        side (its image size for devise's own bodies), which `forward` crops and normalises."""
        return image_batches(images, self.preprocess.resize or self.image_size, batch_size,
                             self.preprocess.interpolation)

    # -----------------------------------------------------------------------------------------
    # Text

    def text_space(self) -> RunLabels:
        """The run's label space, rule and replacements, with the training labels' stored vectors:
        text is read exactly as in training. Loaded once, on first use."""
        if self.text_labels is None:
            if self.vectors_problem:
                raise DeviseError(self.vectors_problem)
            space = self.config["label_space"]
            centre = space.get("centre")
            self.text_labels = run_labels(
                source=space["source"], path=self.vectors_path or space.get("path"), rule=self.config["label_rule"],
                prompts=space.get("prompts"), random_vectors=bool(space.get("random_vectors")),
                seed=int(space.get("seed", 0)), replacements=dict(self.config.get("replacements") or {}) or None,
                known=dict(zip(self.labels, self.label_vectors)),
                centre=None if centre is None else torch.tensor(centre, dtype=torch.float32))
        return self.text_labels

    def encode_text(self, labels: str | list[str]) -> torch.Tensor:
        """Unit vectors of label phrases ("fire ant", "goldfish, Carassius auratus"), one row each, in
        the images' space; the training labels come back as the vectors they were trained on (and
        need no label space loaded)."""
        labels = [labels] if isinstance(labels, str) else list(labels)
        stored = dict(zip(self.labels, self.label_vectors))
        if labels and all(label in stored for label in labels):
            return torch.stack([stored[label] for label in labels])
        return self.text_space().embed(labels)

    def vocabulary(self, spec: str = "train") -> Vocabulary:
        """Candidate labels with their vectors, built as `devise predict --vocabulary SPEC` builds them:
        a comma list of train, words:N (the label space's N most common nouns), file:PATH; a set."""
        check_vocabulary(spec, ["train"])  # a misspelt spec costs no label space loaded
        ids = self.config.get("label_ids")
        return build_vocabulary(self.text_space(), {"train": self.labels}, spec, {"train": ids} if ids else None)

    def common_words(self, n: int) -> list[str]:
        """The n most frequent plain nouns of the label space (none for a sentence encoder)."""
        try:
            return self.text_space().vocabulary_words(n)
        except DeviseError:
            return []

    # -----------------------------------------------------------------------------------------
    # Ranking

    def check_method(self, method: str | None, allowed: tuple[str, ...] = tuple(METHODS)) -> str:
        """The method to use: the model's default when None; one clear error if it cannot."""
        method = (method or self.methods[0]).lower()
        if method not in allowed:
            raise DeviseError(f"unknown method {method!r}; choose one of {', '.join(allowed)}")
        if method not in self.methods:
            what = "an embedding (DeViSE)" if self.kind == "embedding" else "a softmax"
            raise DeviseError(f"method {method!r} is not available: this is {what} model, which classifies by "
                              f"{' or '.join(self.methods)}")
        return method

    def classify(self, images, labels: list[str] | Vocabulary | None = None, *, top: int = 5, method: str | None = None,
                 batch_size: int = BATCH_SIZE, conse_top: int | None = None) -> list[list[tuple[str, float]]]:
        """For each image, the `top` best of `labels` (label phrases, a `vocabulary(...)`, or by
        default the training labels) with their cosines, best first; images are taken `batch_size`
        at a time. `method`: "devise" (an embedding model), "conse" or "softmax" (a softmax model;
        softmax scores its own training labels by probability)."""
        method = self.check_method(method)
        if top <= 0:
            raise DeviseError(f"top must be positive, not {top}")
        check_image_files(images)  # a missing file is found before any label is encoded
        if method == "softmax":
            if labels is not None:
                raise DeviseError("method 'softmax' ranks only the model's training labels; "
                                  "use method 'conse' to rank other labels")
            names, candidates = self.labels, None
        elif isinstance(labels, Vocabulary):
            names, candidates = labels.labels, labels.vectors
        else:
            names = unique_labels(self.labels if labels is None else ([labels] if isinstance(labels, str) else labels))
            if not names:
                raise DeviseError("no candidate labels to rank")
            candidates = self.encode_text(names)
        ranked = []
        for batch in self.image_batches(images, batch_size):
            scores, index = top_labels(METHODS[method], self.forward(batch), self.label_vectors, candidates, top,
                                       conse_top or self.conse_top)
            ranked += [[(names[i], float(s)) for i, s in zip(row_index.tolist(), row_scores.tolist())]
                       for row_index, row_scores in zip(index, scores)]
        return ranked


@torch.no_grad()
def network_outputs(network: torch.nn.Module, preprocess: Preprocess, images: torch.Tensor, *, device: torch.device,
                    bf16: bool, batch_size: int = 1000, progress: bool = False, desc: str = "evaluating") -> torch.Tensor:
    """`network` (a whole model, or its body) on every image of a uint8 tensor, batch by batch, on
    `device`; the outputs float32 on the CPU."""
    network.eval()
    outputs = []
    starts = range(0, len(images), batch_size)
    with freed_memory_kept(), inference_autocast(device, bf16):
        for start in progress_bar(starts, progress, desc=desc, unit="batch", total=len(starts)):
            batch = preprocess.prepare(images[start : start + batch_size].to(device))
            outputs.append(network(batch).float().cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0)


def dataset_features(network: VisualNet, preprocess: Preprocess, data: ImageSet, *, device: torch.device, bf16: bool,
                     batch_size: int = 1000, progress: bool = True, cache_dir: str | Path | None = None,
                     what: str = "body") -> torch.Tensor:
    """A network's body's features of every image of a dataset, float32 on the CPU, as its head sees
    them at inference: a timm body's computed once and cached (`devise.data.features`), devise's
    own small body's computed again."""
    if preprocess.size is None:
        return network_outputs(network.body, preprocess, data.images, device=device, bf16=bf16, batch_size=batch_size, progress=progress,
                               desc=f"features ({what})")
    with exact_float32(device):  # in float32 exactly what the ONNX export computes; bf16 autocasts inside
        return cached_features(network.body, preprocess, data, device=device, bf16=bf16, batch_size=batch_size,
                               progress=progress, what=what, cache_dir=cache_dir)[0].float()


@torch.no_grad()
def head_outputs(head: torch.nn.Module, features: torch.Tensor, device: torch.device,
                 batch_size: int = 1000) -> torch.Tensor:
    """A head on body features, in batches, on the CPU."""
    head.eval()
    with exact_float32(device):
        rows = [head(features[start : start + batch_size].to(device)).float().cpu()
                for start in range(0, len(features), batch_size)]
    return torch.cat(rows) if rows else features


def body_label(config: dict) -> str:
    """The body's name in an exported config (format 1 called it "model")."""
    architecture = config["architecture"]
    return str(architecture.get("body", architecture.get("model")))


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


def image_batches(images, size: int, batch_size: int = BATCH_SIZE,
                  interpolation: str = "bilinear") -> Iterator[torch.Tensor]:
    """uint8 batches (N x 3 x size x size) of at most `batch_size` images, decoded one batch at a time
    so that a long list of files never sits in memory at once."""
    if batch_size <= 0:
        raise DeviseError(f"batch_size must be positive, not {batch_size}")
    if isinstance(images, torch.Tensor):
        yield from tensor_batches(images, size, batch_size, interpolation)
        return
    if isinstance(images, (str, Path, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim == 3):
        images = [images]
    images = list(images)
    if not images:
        raise DeviseError("no images given")
    for start in range(0, len(images), batch_size):
        yield image_batch(images[start : start + batch_size], size, interpolation)


def tensor_batches(images: torch.Tensor, size: int, batch_size: int,
                   interpolation: str = "bilinear") -> Iterator[torch.Tensor]:
    """Slices of an N x 3 x H x W tensor (or one 3 x H x W image) as uint8, resized when not `size` px."""
    images = uint8_images(images)
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise DeviseError(f"an image tensor must be N x 3 x H x W (RGB), not {' x '.join(map(str, images.shape))}")
    for start in range(0, len(images), batch_size):
        part = images[start : start + batch_size]
        if tuple(part.shape[-2:]) != (size, size):
            part = image_batch(list(part.permute(0, 2, 3, 1).cpu().numpy()), size, interpolation)
        yield part


FLOAT_IMAGES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def uint8_images(images: torch.Tensor) -> torch.Tensor:
    """A uint8 image tensor as it is; a float one in [0, 1] (torchvision's `ToTensor`, `ToDtype(scale=True)`)
    scaled by 255 and rounded, so that `x / 255` ranks exactly as `x`; anything else one clear line."""
    if images.dtype == torch.uint8:
        return images
    if images.dtype not in FLOAT_IMAGES:
        raise DeviseError(f"image tensors must be uint8 (0-255) or float (0-1), not {images.dtype}; "
                          "or pass file paths or PIL images")
    if images.numel():
        low, high = float(images.min()), float(images.max())
        if not (0.0 <= low and high <= 1.0):  # NaN fails this too
            raise DeviseError(f"a float image tensor must hold values in [0, 1] (torchvision's scale), not "
                              f"[{low:g}, {high:g}]; divide 0-255 values by 255, or pass them as uint8")
    return (images.float() * 255).round().to(torch.uint8)


def check_image_files(images) -> None:
    """Each path among `images` exists and opens as an image (its header only, so this is quick):
    a command checks its inputs before loading models or encoding labels."""
    if isinstance(images, (str, Path)):
        images = [images]
    if not isinstance(images, (list, tuple)):
        return
    for image in images:
        if not isinstance(image, (str, Path)):
            continue
        path = Path(image)
        if not path.is_file():
            raise DeviseError(f"{path}: no such image file")
        with opened_image(path, str(path)):
            pass
