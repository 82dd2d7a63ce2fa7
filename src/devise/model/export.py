"""A trained model as one portable folder, and `devise.load` for every kind of model.

`devise export RUN --out model/` writes `config.json` (architecture, input pipeline, label space,
rule and replacements, the training labels and the very vectors they were trained on, what the
body saw), `model.safetensors` (tensors only: reading them runs no code) and with `--onnx`
`image_encoder.onnx` (uint8 images in, unit vectors out). `load` reads such a folder, a run folder
or a pretrained classifier's name into a `DeviseModel`.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from devise import files
from devise.config import PROMPT_SETS, TrainConfig
from devise.data.preprocess import Preprocess
from devise.errors import DeviseError
from devise.hardware import check_precision, resolve_device
from devise.labels.prompts import read_prompts
from devise.labels.run_labels import read_replacements, run_replacements, run_space_name
from devise.labels.vocabulary import vectors_or_zeros
from devise.model.checkpoint import CONFIG as RUN_CONFIG
from devise.model.checkpoint import Run, load_run
from devise.model.inference import CONSE_TOP, DeviseModel, body_label, conse_vectors
from devise.model.network import VisualNet, build_network, input_pipeline
from devise.model.pretrained import (
    KNOWN,
    imagenet_classes,
    imagenet_classifier_state,
    is_pretrained_name,
    timm_architecture,
)
from devise.model.schema import FORMAT, FORMAT_VERSION, check_finite, check_shapes, read_header, vectors_file
from devise.model.schema import read_config as read_checked_config
from devise.version import __version__

CONFIG_FILE, WEIGHTS_FILE, ONNX_FILE = "config.json", "model.safetensors", "image_encoder.onnx"
VECTORS_FOLDER = "vectors"  # a label space's vectors file travels with the model, here
MODEL_KIND, MODEL_FILES = "model", (CONFIG_FILE, WEIGHTS_FILE, ONNX_FILE, VECTORS_FOLDER)  # devise's marker; what it writes


def from_run(run: Run, *, replacements: str | None = None, vectors: str | None = None, stock: bool = False,
             name: str | None = None) -> DeviseModel:
    """The model of a loaded run folder (`devise.model.checkpoint.load_run`), as `export` writes it.

    An embedding run keeps the vectors it trained on; a softmax run gets its training labels'
    vectors in its own label space, or in `vectors`, the ones ConSE ranks with. `replacements` (a
    file of 'label<TAB>words' lines) adds to the run's own. A `stock` classifier (a pretrained one
    loaded by name) keeps its labels that have no vector in the space as zero rows: ConSE leaves
    them out."""
    config = run.config
    if run.label_vectors is not None:  # no label space needs loading: the vectors it trained on
        label_vectors, space_name = run.label_vectors.detach().float().cpu(), run_space_name(config)
    else:
        space = run.label_space(replacements, vectors)
        found = vectors_or_zeros(space, run.class_names, run.class_ids)[0] if stock else None
        label_vectors = found if stock else space.embed(run.class_names, run.class_ids)
        space_name = space.name
    source = vectors or config.vectors
    config_json = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "devise_version": __version__,
        "kind": config.head,
        "architecture": {"body": config.body, "timm": timm_architecture(config.body), "width": config.width,
                         "hidden": config.hidden, "dropout": config.dropout, "stem_pool": config.stem_pool,
                         "embed_hidden": config.embed_hidden},
        "outputs": label_vectors.shape[1] if config.head == "embedding" else len(run.class_names),
        "image_size": config.image_size,
        "input": input_text(run.preprocess, config.image_size),
        "normalizer": {"mean": list(run.preprocess.mean), "std": list(run.preprocess.std)},
        "preprocess": run.preprocess.record(),
        "body_trained_on": run.body_trained_on,
        "bf16": config.bf16,
        "label_space": {"source": source, "path": None if vectors else config.vectors_path,
                        "dim": label_vectors.shape[1], "name": space_name, "prompts": exported_prompts(config, source),
                        "random_vectors": config.random_vectors, "seed": config.seed,
                        "centre": None if run.label_centre is None else run.label_centre.float().tolist()},
        "label_rule": config.label_rule,
        "replacements": run_replacements(config, replacements),
        "conse_top": CONSE_TOP,
        "run": name or run.folder.name,
        "labels": list(run.class_names),
        "label_ids": run.class_ids,  # WordNet ids for Tiny ImageNet runs; None where unknown
        "stock": stock,
        "label_vectors": label_vectors.tolist(),
    }
    return DeviseModel(run.model, config_json, run.device, settings=None if stock else config,
                       folder=None if stock else run.folder)


def pretrained_model(name: str, *, device: str | torch.device = "cpu", image_size: int | None = None,
                     vectors: str | None = None, prompts: str | None = None,
                     replacements: str | None = None) -> DeviseModel:
    """A pretrained ImageNet classifier devise knows by name (`devise.list_pretrained()`), as a
    softmax model over its 1,000 ImageNet-1K classes (WordNet ids and names): ConSE with no
    training, its labels read in `vectors` (default GloVe 6B 50-d; `prompts` for a sentence
    space), at its weights' input size unless `image_size` says otherwise."""
    weights = KNOWN[name]
    if image_size is not None and not 8 <= image_size <= 1024:
        raise DeviseError(f"--image-size must be in [8, 1024], not {image_size}")
    config = TrainConfig(head="softmax", body=name, pretrained=True, image_size=image_size or weights.input_size,
                         dropout=0.0, bf16=True, vectors=vectors or "glove-6b-50d", prompts=prompts)
    ids, names = imagenet_classes()
    network = build_network(config, len(ids))
    network.load_state_dict(imagenet_classifier_state(name))
    network = network.to(resolve_device(device), memory_format=torch.channels_last).eval()
    run = Run(config, network, input_pipeline(config), names, Path(name), None, ids, None,
              {"description": weights.trained_on, "ids": ids})
    return from_run(run, replacements=replacements, stock=True, name=name)


def input_text(preprocess: Preprocess, image_size: int) -> str:
    """What config.json says an image goes through before the network, for people."""
    if preprocess.size is None:
        return ("RGB, shorter side scaled to image_size and the centre square cut; 0-255, then (x - mean) / std "
                "per channel")
    return (f"RGB, shorter side scaled to {preprocess.resize} px ({preprocess.interpolation}) and the centre "
            f"{image_size} px square cut; 0-255, then (x - mean) / std per channel")


def exported_prompts(config: TrainConfig, source: str) -> str | list[str] | None:
    """The run's prompt templates as the model file keeps them: a built-in set's name ("default",
    "hypernym"), or the templates of a prompts file themselves (the file need not travel with the
    model); none outside a sentence space."""
    prompts = config.prompts if source == "minilm" else None
    return list(read_prompts(prompts)) if prompts and prompts not in PROMPT_SETS else prompts


def save(model: DeviseModel, folder: str | Path, *, onnx: bool = False) -> Path:
    """Write `config.json` and `model.safetensors` (and with `onnx` the image encoder) as one folder:
    built beside `folder` and swapped in whole (`devise.files.whole_folder`), so that a reader sees
    the earlier export or this one, never a mix. Only a folder devise wrote is replaced."""
    from safetensors.torch import save as safetensors_bytes

    folder = Path(folder)
    with files.whole_folder(folder, kind=MODEL_KIND, what="the exported model", names=MODEL_FILES,
                            legacy=is_earlier_export) as building:
        if onnx:
            export_onnx(model, building / ONNX_FILE)
            model.config["onnx"] = onnx_description(model)
        weights = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.network.state_dict().items()}
        write_bytes(building / WEIGHTS_FILE, safetensors_bytes(weights, metadata={"format": "pt", "devise": FORMAT}))
        config = with_vectors_file(model, building)
        write_bytes(building / CONFIG_FILE, config_text(config).encode("utf-8"))
    return folder


def with_vectors_file(model: DeviseModel, building: Path) -> dict:
    """The model's config.json, its label space's vectors file (if it reads one) copied into the
    folder and named there: a model folder names no file outside itself (`devise.model.schema`), and
    new label text is read in the very vectors the model trained with."""
    space = model.config["label_space"]
    source = model.vectors_path or space.get("path")
    if not source or space.get("random_vectors") or not Path(source).expanduser().is_file():
        return model.config  # none to copy: config.json says which file, and loading says it is missing
    source = Path(source).expanduser()
    (building / VECTORS_FOLDER).mkdir(exist_ok=True)

    def copy(out) -> None:
        with open(source, "rb") as given:
            shutil.copyfileobj(given, out, 1 << 20)

    files.write_with(building / VECTORS_FOLDER / source.name, copy, what="the label space's vectors file")
    return {**model.config, "label_space": {**space, "path": f"{VECTORS_FOLDER}/{source.name}"}}


def is_earlier_export(folder: Path) -> bool:
    """A model folder an earlier devise exported, before its folders had a marker: its config.json
    says it is a devise model."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(config, dict) and config.get("format") == FORMAT


def onnx_description(model: DeviseModel) -> dict:
    """What config.json says of the ONNX image encoder beside it."""
    return {"file": ONNX_FILE, "input": f"images: uint8 N x 3 x {model.image_size} x {model.image_size}, RGB 0-255 "
                                        "(the normaliser is inside the graph)",
            "outputs": "embeddings: float32 N x D unit vectors" + (
                " (ConSE), logits: float32 N x C" if model.kind == "softmax" else "")}


def config_text(config: dict) -> str:
    """config.json for people as well as programs: indented, with one line per label vector."""
    head = json.dumps({key: value for key, value in config.items() if key != "label_vectors"}, indent=1)
    rows = ",\n  ".join(json.dumps(row) for row in config["label_vectors"])
    return f'{head[:-2]},\n "label_vectors": [\n  {rows}\n ]\n}}\n'


def write_bytes(path: Path, data: bytes) -> None:
    """Through a temporary file and a rename (`devise.files.write_file`): a reader never sees half a file."""
    files.write_file(path, data, what=f"the model's {path.name}")


def export(run_folder: str | Path, out: str | Path, *, onnx: bool = False, replacements: str | None = None) -> Path:
    """`devise export`: a run folder's model as config.json + model.safetensors (+ the ONNX image
    encoder) in `out`, loadable with `devise.load(out)` anywhere."""
    out = Path(out)
    if (out / RUN_CONFIG).exists():
        raise DeviseError(f"--out {out} is a run folder; export to a folder of its own")
    files.claim(out, kind=MODEL_KIND, names=MODEL_FILES, legacy=is_earlier_export)  # before any work
    model = from_run(load_run(run_folder, "cpu"), replacements=replacements)
    return save(model, out, onnx=onnx)


def load(path: str | Path, device: str | torch.device = "auto", *, vectors_path: str | None = None,
         vectors: str | None = None, prompts: str | None = None, replacements: str | None = None,
         image_size: int | None = None, precision: str = "float32") -> DeviseModel:
    """An exported model folder (config.json + model.safetensors), a run folder, or a pretrained
    classifier devise knows by name (`devise.list_pretrained()`: ConSE over its ImageNet classes
    with no training, at `image_size`), on `device` (auto: a CUDA GPU if there is one). A softmax
    model's labels are read in `vectors` (with `prompts` for a sentence space) when given, its own
    label space otherwise. `vectors_path` points a model whose label space is a vectors file at that
    file on this machine; `replacements` (a file of 'label<TAB>words' lines) adds to the model's own.
    `precision`: "float32" (default: the ONNX export's vectors, on any host), "bf16" or "auto"
    (bf16 where the device computes it natively)."""
    check_precision(precision)
    model = load_model(path, device, vectors_path=vectors_path, vectors=vectors, prompts=prompts,
                       replacements=replacements, image_size=image_size)
    model.precision = precision
    return model


def load_model(path: str | Path, device: str | torch.device, *, vectors_path: str | None, vectors: str | None,
               prompts: str | None, replacements: str | None, image_size: int | None) -> DeviseModel:
    """`load`'s three kinds of model, told apart by `model_kind`."""
    folder = Path(path).expanduser()
    kind = model_kind(path)
    device = resolve_device(device)
    if kind == "exported":
        model = load_exported(folder, device, vectors_path)
        if replacements:
            model.config["replacements"] = {**(model.config.get("replacements") or {}), **read_replacements(replacements)}
        return model
    if kind == "run":
        run = load_run(folder, device)
        softmax = run.config.head == "softmax"  # an embedding model reads labels in its own space
        return from_run(run, replacements=replacements, vectors=vectors if softmax else None)
    return pretrained_model(str(path), device=device, image_size=image_size, vectors=vectors, prompts=prompts,
                            replacements=replacements)


def model_kind(path: str | Path) -> str:
    """What `load` reads at `path`: "exported" (config.json), "run" (config.toml) or "pretrained" (a
    name devise knows); one line otherwise. Quick (no file is read), so commands check every model
    they are given before loading the first."""
    folder = Path(path).expanduser()
    if (folder / CONFIG_FILE).is_file():
        return "exported"
    if (folder / RUN_CONFIG).is_file():
        return "run"
    if is_pretrained_name(str(path)):
        return "pretrained"
    if not folder.is_dir():
        raise DeviseError(f"{folder}: no such model folder, nor a pretrained model devise knows ({', '.join(KNOWN)})")
    raise DeviseError(f"{folder} is neither an exported devise model (no {CONFIG_FILE}) nor a run folder "
                      f"(no {RUN_CONFIG})")


from_pretrained = load  # the name Hugging Face users reach for


def load_exported(folder: Path, device: torch.device, vectors_path: str | None = None) -> DeviseModel:
    """Rebuild the network from config.json and fill it from model.safetensors: JSON and raw
    tensors only, so loading a file someone handed you runs none of their code. Both are checked
    first (`devise.model.schema`): the config against the schema, the weights' header against the
    network it describes before any tensor is allocated, then every tensor finite."""
    config = read_config(folder / CONFIG_FILE)
    expected = network_from_config(config, folder / CONFIG_FILE, device="meta").state_dict()
    check_shapes(read_header(folder / WEIGHTS_FILE), {name: tuple(t.shape) for name, t in expected.items()},
                 folder / WEIGHTS_FILE)
    network = network_from_config(config, folder / CONFIG_FILE)
    weights = read_weights(folder / WEIGHTS_FILE)
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[1:2] or [error.__class__.__name__]
        raise DeviseError(f"{folder / WEIGHTS_FILE} does not fit the network {CONFIG_FILE} describes "
                          f"({first[0].strip()})") from None
    found, missing = vectors_file(config, folder)
    model = DeviseModel(network, config, device, vectors_path=vectors_path or found)
    model.vectors_problem = None if vectors_path else missing
    return model


def read_config(path: Path) -> dict:
    """config.json, checked against the schema of what devise writes (`devise.model.schema`)."""
    return read_checked_config(path)


def network_from_config(config: dict, where: Path, device: str | None = None) -> VisualNet:
    """The network a checked config.json describes, with freshly initialised weights (on the "meta"
    device: shapes only, nothing allocated)."""
    arch = config["architecture"]
    try:
        settings = TrainConfig(body=body_label(config), width=int(arch["width"]), hidden=int(arch["hidden"]),
                               dropout=float(arch["dropout"]), stem_pool=bool(arch["stem_pool"]),
                               embed_hidden=int(arch["embed_hidden"]))
        outputs = int(config["outputs"])
        with torch.device(device or "cpu"):
            if config["kind"] == "softmax":
                return build_network(settings, outputs)
            return build_network(settings, 1, label_vectors=torch.empty(0, outputs))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise DeviseError(f"{where}: the architecture is incomplete or wrong ({' '.join(str(error).split())[:120]})") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """model.safetensors as CPU tensors, every one finite; one line if it is missing, not a
    safetensors file, or holds a NaN."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise DeviseError(f"{path}: no such weights file")
    try:
        weights = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise DeviseError(f"{path} is not a safetensors file ({' '.join(str(error).split())[:120]})") from None
    check_finite(weights, path)
    return weights

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
        return conse_vectors(outputs, self.label_vectors, self.conse_top), outputs


def export_onnx(model: DeviseModel, path: str | Path) -> Path:
    """The image encoder as ONNX (opset 18, any batch size), by torch's own exporter: input "images",
    uint8 N x 3 x S x S; output "embeddings", float32 unit vectors N x D (a softmax model: its ConSE
    vectors, and its "logits" too). Decoding and resizing stay outside the graph: RGB, the shorter
    side scaled to S and the centre square cut, as `encode_image` does."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs both)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise DeviseError(f'--onnx needs the onnx extra: pip install "devise[onnx]" ({error})') from None
    path = Path(path)
    encoder = ImageEncoder(model).eval()
    example = torch.zeros(2, 3, model.image_size, model.image_size, dtype=torch.uint8)
    outputs = ["embeddings", "logits"] if encoder.conse else ["embeddings"]

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(encoder, (example,), tmp, input_names=["images"], output_names=outputs, opset_version=18,
                              dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                              external_data=False, verbose=False)

    return files.write_through(path, write, what="the ONNX image encoder")
