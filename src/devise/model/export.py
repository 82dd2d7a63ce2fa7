"""A trained model as one portable folder, used through the API people know from open_clip.

`devise export RUN --out model/` writes

    model/config.json          what rebuilds the model: architecture, image size, normaliser, the
                               label space, its rule and replacements, the training labels and
                               the very vectors they were trained on (plain JSON)
    model/model.safetensors    the network's weights (safetensors: tensors only, no pickle)
    model/image_encoder.onnx   with --onnx: uint8 images in, unit vectors out

and `devise.load("model/")` reads it back on any device without the run folder, its training
checkpoint or a single unpickled byte:

    import devise
    model = devise.load("model/")                        # or a run folder; device="auto"
    model.encode_image(["tiger.jpg"])                    # N x D unit vectors
    model.encode_text(["tiger", "lion"])                 # 2 x D, read with the run's label rule
    model.classify(["tiger.jpg"], ["tiger", "lion", "house cat"], top=2)
    # [[("tiger", 0.81), ("lion", 0.77)]]

An embedding run classifies as DeViSE (its own output vector); a softmax run as ConSE (the
probability-weighted mean of its top training labels' vectors) or as plain softmax over its
training labels. Ranking is `devise.model.inference`'s, so an exported model ranks exactly as its run does.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from devise import __version__
from devise.config import PROMPT_SETS
from devise.data.pipeline import Preprocess
from devise.errors import DeviseError, read_text_file
from devise.hardware import autocast, inference_bf16, resolve_device
from devise.model.inference import CONSE_TOP, image_batch, query_vectors, top_labels
from devise.model.network import EmbeddingHead, ModelSpec, VisualNet, create_model
from devise.model.pretrained import timm_architecture
from devise.labels.run_labels import RunLabels, label_space_for, read_replacements, run_replacements, run_space_name
from devise.labels.vocabulary import Vocabulary, build_vocabulary, vectors_or_zeros
from devise.labels.prompts import read_prompts

FORMAT, FORMAT_VERSION = "devise-model", 2  # 2: bodies from timm, the input pipeline
CONFIG_FILE, WEIGHTS_FILE, ONNX_FILE = "config.json", "model.safetensors", "image_encoder.onnx"
METHODS = {"devise": "DeViSE", "conse": "ConSE", "softmax": "softmax"}  # classify's methods and their names
BATCH_SIZE = 256  # images a forward pass: memory stays bounded however many images are given
REQUIRED = ("kind", "architecture", "image_size", "normalizer", "label_space", "label_rule", "labels",
            "label_vectors", "outputs")


class DeviseModel:
    """A trained network with its label space: images and label text in, unit vectors and ranked
    labels out. Built by `load` (an exported folder or a run folder) or `from_run`."""

    def __init__(self, network: VisualNet, config: dict, device: torch.device, vectors_path: str | None = None):
        self.network = network.to(device).eval()
        self.config = config
        self.device = device
        self.labels: list[str] = list(config["labels"])
        self.label_vectors = torch.tensor(config["label_vectors"], dtype=torch.float32).reshape(len(self.labels), -1)
        self.image_size: int = int(config["image_size"])
        normalizer = config["normalizer"]
        self.preprocess = (Preprocess.from_record(config["preprocess"]) if config.get("preprocess")
                           else Preprocess(tuple(normalizer["mean"]), tuple(normalizer["std"])))
        self.vectors_path = vectors_path
        self.text_labels: RunLabels | None = None  # the label space, loaded on first use

    def __repr__(self) -> str:
        return (f"DeviseModel({self.kind}, {body_name(self.config['architecture'])} at {self.image_size} px, "
                f"{len(self.labels)} labels in {self.label_space_name}, {self.device})")

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

    @torch.no_grad()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """One uint8 batch at the model's image size -> raw outputs (unit vectors or logits) on the
        CPU, normalised and computed exactly as `devise.model.inference.model_outputs` does for the run."""
        images = self.preprocess.prepare(batch.to(self.device))
        with autocast(self.device, inference_bf16(self.config.get("bf16"), self.device)):
            return self.network(images).float().cpu()

    def encode_image(self, images, method: str | None = None, batch_size: int = BATCH_SIZE,
                     conse_top: int | None = None) -> torch.Tensor:
        """Unit vectors in the label space, one row per image: the network's own output (DeViSE)
        or, for a softmax model, its ConSE vector. `images`: file paths, PIL images, H x W x C
        uint8 arrays, or a uint8 tensor N x 3 x H x W (any size: resized and centre-cropped)."""
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
            space = self.config["label_space"]
            settings = SimpleNamespace(vectors=space["source"], vectors_path=self.vectors_path or space.get("path"),
                                       label_rule=self.config["label_rule"], replacements=None,
                                       prompts=space.get("prompts"), random_vectors=bool(space.get("random_vectors")),
                                       seed=int(space.get("seed", 0)))
            centre = space.get("centre")
            labels = label_space_for(settings, dict(zip(self.labels, self.label_vectors)),
                                     centre=None if centre is None else torch.tensor(centre, dtype=torch.float32))
            labels.replacements = dict(self.config.get("replacements") or {}) or None
            self.text_labels = labels
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
        a comma list of train, words:N (the label space's N most common words), file:PATH."""
        ids = self.config.get("label_ids")
        return build_vocabulary(self.text_space(), {"train": self.labels}, spec, {"train": ids} if ids else None)

    def common_words(self, n: int) -> list[str]:
        """The n most frequent plain words of the label space (none for a sentence encoder)."""
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

    def classify(self, images, labels: list[str] | Vocabulary | None = None, top: int = 5, method: str | None = None,
                 batch_size: int = BATCH_SIZE, conse_top: int | None = None) -> list[list[tuple[str, float]]]:
        """For each image, the `top` best of `labels` (label phrases, a `vocabulary(...)`, or by
        default the training labels) with their cosines, best first; images are taken `batch_size`
        at a time. `method`: "devise" (an embedding model), "conse" or "softmax" (a softmax model;
        softmax scores its own training labels by probability)."""
        method = self.check_method(method)
        if top <= 0:
            raise DeviseError(f"top must be positive, not {top}")
        if method == "softmax":
            if labels is not None:
                raise DeviseError("method 'softmax' ranks only the model's training labels; "
                                  "use method 'conse' to rank other labels")
            names, candidates = self.labels, None
        elif isinstance(labels, Vocabulary):
            names, candidates = labels.labels, labels.vectors
        else:
            names = list(dict.fromkeys(self.labels if labels is None else
                                       ([labels] if isinstance(labels, str) else labels)))
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

    # -----------------------------------------------------------------------------------------
    # Files

    def save(self, folder: str | Path) -> Path:
        """Write `config.json` and `model.safetensors` into `folder`, each through a temporary file."""
        from safetensors.torch import save

        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise DeviseError(f"{folder} exists and is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        weights = {name: tensor.detach().to("cpu").contiguous() for name, tensor in self.network.state_dict().items()}
        write_bytes(folder / WEIGHTS_FILE, save(weights, metadata={"format": "pt", "devise": FORMAT}))
        write_bytes(folder / CONFIG_FILE, config_text(self.config).encode("utf-8"))
        return folder


def config_text(config: dict) -> str:
    """config.json for people as well as programs: indented, with one line per label vector."""
    head = json.dumps({key: value for key, value in config.items() if key != "label_vectors"}, indent=1)
    rows = ",\n  ".join(json.dumps(row) for row in config["label_vectors"])
    return f'{head[:-2]},\n "label_vectors": [\n  {rows}\n ]\n}}\n'


def write_bytes(path: Path, data: bytes) -> None:
    """Through a temporary file and a rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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
    """Slices of a uint8 N x 3 x H x W tensor (or one 3 x H x W image), resized when not `size` px."""
    if images.dtype != torch.uint8:
        raise DeviseError(f"image tensors must be uint8 (0-255), not {images.dtype}; or pass file paths or PIL images")
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise DeviseError(f"an image tensor must be N x 3 x H x W (RGB), not {' x '.join(map(str, images.shape))}")
    for start in range(0, len(images), batch_size):
        part = images[start : start + batch_size]
        if tuple(part.shape[-2:]) != (size, size):
            part = image_batch(list(part.permute(0, 2, 3, 1).cpu().numpy()), size, interpolation)
        yield part


# ---------------------------------------------------------------------------------------------
# From a run, to a folder, back again


def from_run(run, replacements: str | None = None) -> DeviseModel:
    """The portable model of a loaded run (`devise.training.runs.load_run`): what `export` writes.

    An embedding run keeps the vectors it trained on; a softmax run gets its training labels'
    vectors in its configured label space, the ones ConSE ranks with (as `devise predict --conse`).
    `replacements` (a file of 'label<TAB>words' lines) adds to the run's own."""
    from devise.training.runs import is_stock

    config = run.config
    merged = run_replacements(config, replacements)
    if run.label_vectors is not None:
        vectors = run.label_vectors.detach().float().cpu()
    elif is_stock(run):  # a stock classifier's labels without a vector stay out of ConSE
        vectors = vectors_or_zeros(run.label_space(replacements), run.class_names, run.class_ids)[0]
    else:
        vectors = run.label_space(replacements).embed(run.class_names, run.class_ids)
    spec = ModelSpec.of(config)
    return DeviseModel(run.model, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "devise_version": __version__,
        "kind": config.head,
        "architecture": {"body": spec.body, "timm": timm_architecture(spec.body), "width": spec.width,
                         "hidden": spec.hidden, "dropout": spec.dropout, "stem_pool": spec.stem_pool,
                         "embed_hidden": config.embed_hidden},
        "outputs": vectors.shape[1] if config.head == "embedding" else len(run.class_names),
        "image_size": config.image_size,
        "input": input_text(run.preprocess, config.image_size),
        "normalizer": {"mean": list(run.preprocess.mean), "std": list(run.preprocess.std)},
        "preprocess": run.preprocess.record(),
        "body_trained_on": run.body_trained_on,
        "bf16": config.bf16,
        "label_space": {"source": config.vectors, "path": config.vectors_path, "dim": vectors.shape[1],
                        "name": run_space_name(config), "prompts": exported_prompts(config),
                        "random_vectors": config.random_vectors, "seed": config.seed,
                        "centre": None if run.label_centre is None else run.label_centre.float().tolist()},
        "label_rule": config.label_rule,
        "replacements": merged,
        "conse_top": CONSE_TOP,
        "run": run.folder.name,
        "labels": list(run.class_names),
        "label_ids": getattr(run, "class_ids", None),  # WordNet ids for Tiny ImageNet runs; None where unknown
        "stock": is_stock(run),  # a pretrained classifier loaded by name, not a run devise trained
        "label_vectors": vectors.tolist(),
    }, run.device)


def input_text(preprocess: Preprocess, image_size: int) -> str:
    """What config.json says an image goes through before the network, for people."""
    if preprocess.size is None:
        return ("RGB, shorter side scaled to image_size and the centre square cut; 0-255, then (x - mean) / std "
                "per channel")
    return (f"RGB, shorter side scaled to {preprocess.resize} px ({preprocess.interpolation}) and the centre "
            f"{image_size} px square cut; 0-255, then (x - mean) / std per channel")


def body_name(architecture: dict) -> str:
    """The body of an exported architecture (format 1 called it "model")."""
    return str(architecture.get("body", architecture.get("model")))


def exported_prompts(config) -> str | list[str] | None:
    """The run's prompt templates as the model file keeps them: a built-in set's name ("default",
    "hypernym"), or the templates of a prompts file themselves (the file need not travel with the
    model)."""
    prompts = getattr(config, "prompts", None)
    return list(read_prompts(prompts)) if prompts and prompts not in PROMPT_SETS else prompts


def export(run_folder: str | Path, out: str | Path, onnx: bool = False, replacements: str | None = None) -> Path:
    """`devise export`: a run folder's model as config.json + model.safetensors (+ the ONNX image
    encoder) in `out`, loadable with `devise.load(out)` anywhere."""
    from devise.training.runs import CONFIG, load_run

    out = Path(out)
    if (out / CONFIG).exists():
        raise DeviseError(f"--out {out} is a run folder; export to a folder of its own")
    model = from_run(load_run(run_folder, "cpu"), replacements)
    out.mkdir(parents=True, exist_ok=True)
    (out / ONNX_FILE).unlink(missing_ok=True)  # never leave an encoder from an earlier export beside new weights
    if onnx:
        export_onnx(model, out / ONNX_FILE)
        model.config["onnx"] = {
            "file": ONNX_FILE, "input": f"images: uint8 N x 3 x {model.image_size} x {model.image_size}, RGB 0-255 "
                                        "(the normaliser is inside the graph)",
            "outputs": "embeddings: float32 N x D unit vectors" + (
                " (ConSE), logits: float32 N x C" if model.kind == "softmax" else "")}
    return model.save(out)


def load(path: str | Path, device: str | torch.device = "auto", vectors_path: str | None = None,
         vectors: str | None = None, prompts: str | None = None, replacements: str | None = None) -> DeviseModel:
    """An exported model folder (config.json + model.safetensors), a run folder, or a pretrained
    classifier devise knows by name (`devise.list_pretrained()`: ConSE over its ImageNet classes
    with no training, its labels read in `vectors`, default GloVe 6B 50-d, with `prompts` for a
    sentence space), on `device` (auto: a CUDA GPU if there is one). `vectors_path` points a model
    whose label space is a vectors file at that file on this machine; `replacements` (a file of
    'label<TAB>words' lines) adds to the model's own."""
    folder = Path(path).expanduser()
    if (folder / CONFIG_FILE).is_file():
        model = load_exported(folder, resolve_device(device), vectors_path)
        if replacements:
            model.config["replacements"] = {**(model.config.get("replacements") or {}), **read_replacements(replacements)}
        return model
    from devise.model.pretrained import KNOWN, is_pretrained_name
    from devise.training.runs import CONFIG, load_pretrained_run, load_run

    if (folder / CONFIG).is_file():
        return from_run(load_run(folder, device), replacements)
    if is_pretrained_name(str(path)):
        return from_run(load_pretrained_run(str(path), device, vectors=vectors, prompts=prompts), replacements)
    if not folder.is_dir():
        raise DeviseError(f"{folder}: no such model folder, nor a pretrained model devise knows ({', '.join(KNOWN)})")
    raise DeviseError(f"{folder} is neither an exported devise model (no {CONFIG_FILE}) nor a run folder")


from_pretrained = load  # the name Hugging Face users reach for


def load_exported(folder: Path, device: torch.device, vectors_path: str | None = None) -> DeviseModel:
    """Rebuild the network from config.json and fill it from model.safetensors: JSON and raw
    tensors only, so loading a file someone handed you runs none of their code."""
    config = read_config(folder / CONFIG_FILE)
    network = build_network(config, folder / CONFIG_FILE)
    weights = read_weights(folder / WEIGHTS_FILE)
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[1:2] or [error.__class__.__name__]
        raise DeviseError(f"{folder / WEIGHTS_FILE} does not fit the network {CONFIG_FILE} describes "
                          f"({first[0].strip()})") from None
    return DeviseModel(network, config, device, vectors_path)


def read_config(path: Path) -> dict:
    """config.json, checked for the keys and format devise writes."""
    try:
        config = json.loads(read_text_file(path, "model config"))
    except ValueError as error:
        raise DeviseError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise DeviseError(f"{path} is not a devise model config (no \"format\": \"{FORMAT}\")")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise DeviseError(f"{path} is format version {config['format_version']}; this devise reads up to "
                          f"{FORMAT_VERSION}: upgrade devise")
    missing = [key for key in REQUIRED if key not in config]
    if missing:
        raise DeviseError(f"{path} is not a devise model config (no {missing[0]!r} in it)")
    if config["kind"] not in ("embedding", "softmax") or len(config["labels"]) != len(config["label_vectors"]):
        raise DeviseError(f"{path}: kind must be embedding or softmax, with one vector per label")
    return config


def build_network(config: dict, where: Path) -> VisualNet:
    """The network config.json describes, with freshly initialised weights."""
    arch = config["architecture"]
    try:
        spec = ModelSpec(body_name(arch), int(arch["width"]), int(arch["hidden"]), float(arch["dropout"]),
                         bool(arch["stem_pool"]))
        if config["kind"] == "softmax":
            return create_model(spec, int(config["outputs"]))
        network = create_model(spec, 1)
        network.head = EmbeddingHead(network.feature_dim, int(config["outputs"]), int(arch["embed_hidden"]) or None)
        return network
    except (KeyError, TypeError, ValueError) as error:
        raise DeviseError(f"{where}: the architecture is incomplete or wrong ({error!r})") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """model.safetensors as CPU tensors; one line if it is missing or not a safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise DeviseError(f"{path}: no such weights file")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise DeviseError(f"{path} is not a safetensors file ({' '.join(str(error).split())[:120]})") from None


# ---------------------------------------------------------------------------------------------
# ONNX


class ImageEncoder(nn.Module):
    """uint8 images (N x 3 x S x S, RGB, 0-255) -> unit vectors, in one graph: the normaliser, the
    network and, for a softmax model, ConSE over its training labels (which also returns logits)."""

    def __init__(self, model: DeviseModel, conse_top: int | None = None):
        super().__init__()
        self.network = copy.deepcopy(model.network).cpu().float().eval()
        self.register_buffer("mean", torch.tensor(model.preprocess.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(model.preprocess.std).view(1, 3, 1, 1))
        self.register_buffer("label_vectors", model.label_vectors.clone())
        self.conse = model.kind == "softmax"
        self.conse_top = min(conse_top or model.conse_top, len(model.labels))

    def forward(self, images: torch.Tensor):
        outputs = self.network((images.float() - self.mean) / self.std)
        if not self.conse:
            return outputs
        p, index = outputs.softmax(dim=1).topk(self.conse_top, dim=1)
        return F.normalize((p[:, :, None] * self.label_vectors[index]).sum(dim=1), dim=1), outputs


def export_onnx(model: DeviseModel, path: str | Path) -> Path:
    """The image encoder as ONNX (opset 18, any batch size), by torch's own exporter: input "images",
    uint8 N x 3 x S x S; output "embeddings", float32 unit vectors N x D (a softmax model: its ConSE
    vectors, and its "logits" too). Decoding and resizing stay outside the graph: RGB, the shorter
    side scaled to S and the centre square cut, as `encode_image` does."""
    import warnings

    try:
        import onnx  # noqa: F401  (torch's exporter needs both)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise DeviseError(f'--onnx needs the onnx extra: pip install "devise[onnx]" ({error})') from None
    path = Path(path)
    encoder = ImageEncoder(model).eval()
    example = torch.zeros(2, 3, model.image_size, model.image_size, dtype=torch.uint8)
    outputs = ["embeddings", "logits"] if encoder.conse else ["embeddings"]
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder, (example,), tmp, input_names=["images"], output_names=outputs, opset_version=18,
                          dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), external_data=False,
                          verbose=False)
    os.replace(tmp, path)
    return path
