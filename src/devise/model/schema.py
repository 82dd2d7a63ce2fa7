"""What an exported model folder may hold, checked before any of it is used.

`config.json` is read against one schema: every key `devise export` writes, its type and range
(the architecture's from `TrainConfig`'s own), sizes consistent with each other; optional keys an
older folder lacks get their defaults. `model.safetensors`'s header is read alone, before any
tensor is allocated, and every tensor must have the shape of the network config.json describes;
every tensor loaded must be finite. Nothing in the folder may name a file outside it: a label
space's vectors file is looked up inside the folder only. A folder someone handed you is input
like any other, so every refusal is one line naming the file and the field.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path, PurePath

import torch

from devise.config import (
    LABEL_RULES,
    LABEL_SPACES,
    PROMPT_SETS,
    is_body,
    outside,
    range_text,
    settings,
    value_type,
)
from devise.data.sources import RESAMPLING
from devise.errors import DeviseError, read_file_bytes
from devise.labels.prompts import read_prompts
from devise.labels.sources import FILE_FORMATS

FORMAT, FORMAT_VERSION = "devise-model", 2  # 2: bodies from timm, the input pipeline
MAX_CONFIG_BYTES = 512 * 2**20  # far above the largest label set's config.json; a bigger one is refused unread
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on its JSON header
MAX_DEPTH = 8  # config.json nests 3 deep; deeper JSON is refused before anything walks it
MIN_IMAGE_SIZE = 8  # config.py's rule: an image size is 0 (the body's own, resolved by export) or at least 8
MAX_RESIZE = 2048  # the side a pretrained body's pipeline may resize to before its centre crop
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
ARCHITECTURE_SETTINGS = ("width", "hidden", "dropout", "embed_hidden")  # ranged by TrainConfig's metadata


class Fields:
    """Checks of one file's values, each failing as one line naming the file and the field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, field: str, problem: str) -> DeviseError:
        return DeviseError(f"{self.path}: {field} {problem}")

    def whole(self, value, field: str, low: int | None = None, high: int | None = None) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(field, f"must be a whole number, not {shown(value)}")
        if outside(value, low, high, True, True):
            raise self.fail(field, f"must be {range_text(low, high, True, True)}, not {shown(value)}")
        return value

    def number(self, value, field: str, bounds: tuple | None = None) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise self.fail(field, f"must be a finite number, not {shown(value)}")
        if bounds is not None and outside(value, *bounds):
            raise self.fail(field, f"must be {range_text(*bounds)}, not {shown(value)}")
        return value

    def ranged(self, value, field: str, setting: str):
        """A value in the range TrainConfig gives the setting of that name."""
        bounds = setting_range(setting)
        if value_type(setting) is int:
            self.whole(value, field)
        return self.number(value, field, bounds)

    def text(self, value, field: str, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.fail(field, f"must be text{' or null' if optional else ''}, not {shown(value)}")
        return value

    def flag(self, value, field: str, optional: bool = False) -> bool | None:
        if not isinstance(value, bool) and not (value is None and optional):
            raise self.fail(field, f"must be true or false, not {shown(value)}")
        return value

    def choice(self, value, field: str, choices: tuple) -> str:
        if not isinstance(value, str) or value not in choices:
            raise self.fail(field, f"must be one of {', '.join(choices)}, not {shown(value)}")
        return value

    def mapping(self, value, field: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(field, f"must be an object, not {shown(value)}")
        return value

    def texts(self, value, field: str, length: int | None = None, nulls: bool = False) -> list:
        if not isinstance(value, list):
            raise self.fail(field, f"must be a list of text, not {shown(value)}")
        if length is not None and len(value) != length:
            raise self.fail(field, f"must hold {length} items (one per label), not {len(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str) and not (nulls and item is None):
                raise self.fail(f"{field}[{index}]", f"must be text, not {shown(item)}")
        return value

    def vector(self, value, field: str, length: int, positive: bool = False) -> list:
        """A list of `length` finite numbers (each above 0 if `positive`)."""
        if not isinstance(value, list) or len(value) != length:
            raise self.fail(field, f"must be a list of {length} numbers, not {shown(value)}")
        for index, item in enumerate(value):
            self.number(item, f"{field}[{index}]", (0, None, False, True) if positive else None)
        return value


def shown(value) -> str:
    """A value as an error line quotes it: short, whatever its size."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def setting_range(name: str) -> tuple | None:
    return next(item.metadata["range"] for item in settings() if item.name == name)


# ---------------------------------------------------------------------------------------------
# config.json


def read_config(path: Path) -> dict:
    """config.json parsed (bounded in bytes and depth) and checked against the schema, with the
    optional keys an older folder lacks set to their defaults."""
    return check_config(parse_json(path, MAX_CONFIG_BYTES, "model config"), path)


def parse_json(path: Path, limit: int, what: str, data: bytes | None = None):
    """A JSON file (or `data` read from it) that is at most `limit` bytes and nests at most
    MAX_DEPTH deep; NaN and Infinity parse, and the schema refuses them where they matter."""
    if data is None:
        data = read_file_bytes(path, what, limit=limit)
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise DeviseError(f"{path}: its {what} is not UTF-8 text") from None
    except RecursionError:
        raise DeviseError(f"{path}: its {what} nests deeper than devise reads ({MAX_DEPTH} levels)") from None
    except ValueError as error:
        raise DeviseError(f"{path}: its {what} is not valid JSON ({' '.join(str(error).split())[:120]})") from None
    if depth(value) > MAX_DEPTH:
        raise DeviseError(f"{path}: its {what} nests deeper than devise reads ({MAX_DEPTH} levels)")
    return value


def depth(value) -> int:
    """How deep lists and objects nest in a parsed JSON value (without recursion)."""
    deepest, level = 0, [(value, 1)]
    while level:
        item, at = level.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, at)
            if at <= MAX_DEPTH:
                children = item.values() if isinstance(item, dict) else item
                level.extend((child, at + 1) for child in children if isinstance(child, (list, dict)))
    return deepest


def check_config(config, path: Path) -> dict:
    """Every key of config.json that devise reads, checked; what an older folder lacks, defaulted."""
    fields = Fields(path)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise DeviseError(f"{path} is not a devise model config (no \"format\": \"{FORMAT}\")")
    version = fields.whole(config.get("format_version", 1), "format_version", 1)
    if version > FORMAT_VERSION:
        raise DeviseError(f"{path} is format version {version}; this devise reads up to {FORMAT_VERSION}: "
                          "upgrade devise")
    for key in ("kind", "architecture", "image_size", "normalizer", "label_space", "label_rule", "labels",
                "label_vectors", "outputs"):
        if key not in config:
            raise DeviseError(f"{path} is not a devise model config (no {key!r} in it)")
    check_architecture(fields, config)
    check_pipeline(fields, config)
    check_labels(fields, config)
    check_label_space(fields, config)
    check_extras(fields, config)
    return config


def check_architecture(fields: Fields, config: dict) -> None:
    arch = fields.mapping(config["architecture"], "architecture")
    body = arch.get("body", arch.get("model"))
    if not is_body(body):
        raise fields.fail("architecture.body", f"must be cnn, resnet9, efficientnet-lite0 or timm:NAME, not {shown(body)}")
    fields.text(arch.get("timm"), "architecture.timm", optional=True)
    for name in ARCHITECTURE_SETTINGS:
        if name not in arch:
            raise fields.fail(f"architecture.{name}", "is missing")
        fields.ranged(arch[name], f"architecture.{name}", name)
    fields.flag(arch.get("stem_pool"), "architecture.stem_pool")


def check_pipeline(fields: Fields, config: dict) -> None:
    size = fields.whole(config["image_size"], "image_size", MIN_IMAGE_SIZE, setting_range("image_size")[1])
    normalizer = fields.mapping(config["normalizer"], "normalizer")
    fields.vector(normalizer.get("mean"), "normalizer.mean", 3)
    fields.vector(normalizer.get("std"), "normalizer.std", 3, positive=True)
    record = config.setdefault("preprocess", None)
    if record is None:
        return
    fields.mapping(record, "preprocess")
    fields.vector(record.get("mean"), "preprocess.mean", 3)
    fields.vector(record.get("std"), "preprocess.std", 3, positive=True)
    if record.get("size") is not None and fields.whole(record["size"], "preprocess.size") != size:
        raise fields.fail("preprocess.size", f"must be the image_size, {size}, not {shown(record['size'])}")
    crop = fields.number(record.get("crop_pct", 1.0), "preprocess.crop_pct", (0, 1, False, True))
    if round(size / crop) > MAX_RESIZE:
        raise fields.fail("preprocess.crop_pct", f"resizes images to {round(size / crop)} px, above {MAX_RESIZE}")
    fields.choice(record.get("interpolation", "bilinear"), "preprocess.interpolation", tuple(RESAMPLING))


def check_labels(fields: Fields, config: dict) -> None:
    """The labels, their ids and vectors, one each per label; the outputs and ConSE's T that go with them."""
    kind = fields.choice(config["kind"], "kind", ("embedding", "softmax"))
    labels = fields.texts(config["labels"], "labels")
    if not labels:
        raise fields.fail("labels", "is empty")
    if config.setdefault("label_ids", None) is not None:
        fields.texts(config["label_ids"], "label_ids", len(labels), nulls=True)
    rows = config["label_vectors"]
    if not isinstance(rows, list) or len(rows) != len(labels):
        raise fields.fail("label_vectors", f"must be a list of {len(labels)} vectors (one per label), not "
                                           f"{len(rows) if isinstance(rows, list) else shown(rows)}")
    space = fields.mapping(config["label_space"], "label_space")
    dim = fields.whole(space.get("dim"), "label_space.dim", 1)
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != dim:
            raise fields.fail(f"label_vectors[{index}]", f"must be a list of label_space.dim = {dim} numbers, "
                                                          f"not {shown(row)}")
    check_finite_numbers(fields, rows, "label_vectors")
    outputs = fields.whole(config["outputs"], "outputs", 1)
    expected = dim if kind == "embedding" else len(labels)
    if outputs != expected:
        what = "label_space.dim" if kind == "embedding" else "the number of labels"
        raise fields.fail("outputs", f"must be {what} ({expected}) for {'an' if kind == 'embedding' else 'a'} {kind} "
                                     f"model, not {outputs}")
    from devise.model.inference import CONSE_TOP

    fields.whole(config.setdefault("conse_top", CONSE_TOP), "conse_top", 1, max(len(labels), CONSE_TOP))


def check_finite_numbers(fields: Fields, rows: list, field: str) -> None:
    """Rows of numbers, each finite as float32 holds it (a NaN row would score every image NaN)."""
    try:
        values = torch.tensor(rows, dtype=torch.float32)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        raise fields.fail(field, "must hold numbers only") from None
    finite = torch.isfinite(values).all(dim=-1) if values.dim() > 1 else torch.isfinite(values)
    if not bool(finite.all()):
        index = int((~finite).nonzero()[0][0])
        raise fields.fail(f"{field}[{index}]" if values.dim() > 1 else field,
                          "holds NaN or infinite values (or a number too large for float32)")


def check_label_space(fields: Fields, config: dict) -> None:
    """The label space: a known source; a vectors file only for the file formats, and never a
    prompts file (the templates themselves travel in config.json); the centre one finite vector."""
    space = config["label_space"]
    source = fields.choice(space.get("source"), "label_space.source", LABEL_SPACES)
    path = fields.text(space.get("path"), "label_space.path", optional=True)
    if path is not None and source not in FILE_FORMATS:
        raise fields.fail("label_space.path", f"must be null: source {source} is packaged and reads no file")
    if path is not None and (".." in PurePath(path).parts or not PurePath(path).name):
        raise fields.fail("label_space.path", "must not lead out of the model folder")
    fields.text(space.get("name"), "label_space.name")
    prompts = space.get("prompts")
    if prompts is not None and not (isinstance(prompts, str) and prompts in PROMPT_SETS):
        if not isinstance(prompts, list):
            raise fields.fail("label_space.prompts", f"must be {' or '.join(PROMPT_SETS)} or a list of templates, "
                                                     f"not {shown(prompts)}")
        fields.texts(prompts, "label_space.prompts")
        try:
            read_prompts(prompts)
        except DeviseError:
            raise fields.fail("label_space.prompts", "must hold templates with exactly one {} each") from None
    fields.flag(space.setdefault("random_vectors", False), "label_space.random_vectors")
    fields.ranged(space.setdefault("seed", 0), "label_space.seed", "seed")
    if space.setdefault("centre", None) is not None:
        fields.vector(space["centre"], "label_space.centre", space["dim"])
    fields.choice(config["label_rule"], "label_rule", LABEL_RULES)
    replacements = fields.mapping(config.setdefault("replacements", {}) or {}, "replacements")
    for label, words in replacements.items():
        fields.text(words, f"replacements[{shown(label)}]")


def check_extras(fields: Fields, config: dict) -> None:
    """What devise writes for people and for later commands: text, flags, what the body saw."""
    for key in ("devise_version", "run", "input"):
        fields.text(config.get(key), key, optional=True)
    fields.flag(config.setdefault("bf16", None), "bf16", optional=True)
    fields.flag(config.setdefault("stock", False), "stock")
    seen = config.setdefault("body_trained_on", None)
    if seen is not None:
        fields.mapping(seen, "body_trained_on")
        fields.text(seen.get("description"), "body_trained_on.description", optional=True)
        if seen.get("ids") is not None:
            fields.texts(seen["ids"], "body_trained_on.ids")
    if config.get("onnx") is not None:
        for key, value in fields.mapping(config["onnx"], "onnx").items():
            fields.text(value, f"onnx.{key}")


def vectors_file(config: dict, folder: Path) -> tuple[str | None, str | None]:
    """(the label space's vectors file inside `folder`, or None; why there is none, or None).
    config.json records where the file was on the machine that trained the model; here only a file
    of that name inside the model folder is read (a link leading out of it is not), so the folder
    names no file anywhere else."""
    path = config["label_space"].get("path")
    if path is None or config["label_space"]["random_vectors"]:  # the control's vectors need no file
        return None, None
    name = PurePath(path).name
    inside = folder / (path if not PurePath(path).is_absolute() else name)
    root = folder.resolve()
    if inside.is_file() and inside.resolve().is_relative_to(root):
        return str(inside), None
    return None, (f"{folder / 'config.json'}: label_space.path: the vectors file {name} is not in the model folder; "
                  "copy it there (devise reads no file outside the folder), or pass vectors_path to devise.load")


# ---------------------------------------------------------------------------------------------
# model.safetensors


def read_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, from the safetensors header alone (8 bytes of its length, then JSON),
    checked to describe tensors that lie within the file: nothing is allocated for a tensor yet."""
    if not path.is_file():
        raise DeviseError(f"{path}: no such weights file")
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            prefix = handle.read(8)
            length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
            if length is None or length > min(size - 8, MAX_HEADER_BYTES):
                raise DeviseError(f"{path} is not a safetensors file (its header length is not within the file)")
            header = parse_json(path, MAX_HEADER_BYTES, "safetensors header", handle.read(length))
    except OSError as error:
        raise DeviseError(f"cannot read {path}: {error.strerror or error}") from None
    if not isinstance(header, dict):
        raise DeviseError(f"{path} is not a safetensors file (its header is not an object)")
    fields, data_bytes = Fields(path), size - 8 - length
    shapes = {}
    for name, entry in header.items():
        if name == "__metadata__":
            fields.mapping(entry, "__metadata__")
            continue
        shapes[name] = tensor_shape(fields, name, entry, data_bytes)
    return shapes


def tensor_shape(fields: Fields, name: str, entry, data_bytes: int) -> tuple[int, ...]:
    """One header entry's shape, once its type, shape and offsets agree with each other and the file."""
    where = f"tensor {shown(name)}"
    entry = fields.mapping(entry, where)
    dtype = fields.choice(entry.get("dtype"), f"{where} dtype", tuple(DTYPE_BYTES))
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > 8:
        raise fields.fail(f"{where} shape", f"must be a list of sizes, not {shown(shape)}")
    for size in shape:
        fields.whole(size, f"{where} shape", 0, data_bytes)
    offsets = entry.get("data_offsets")
    if not isinstance(offsets, list) or len(offsets) != 2:
        raise fields.fail(f"{where} data_offsets", f"must be [begin, end], not {shown(offsets)}")
    begin, end = (fields.whole(offset, f"{where} data_offsets", 0, data_bytes) for offset in offsets)
    if end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise fields.fail(f"{where}", f"is {' x '.join(map(str, shape)) or 'a scalar'} {dtype}, which its "
                                      f"data_offsets ({end - begin} bytes) do not hold")
    return tuple(shape)


def check_shapes(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], path: Path) -> None:
    """The tensors of the file are exactly those of the network config.json describes, shape for shape."""
    for name, shape in expected.items():
        if name not in found:
            raise DeviseError(f"{path}: tensor {shown(name)} is missing (the network config.json describes has it)")
        if found[name] != shape:
            raise DeviseError(f"{path}: tensor {shown(name)} is {size_text(found[name])}, but the network "
                              f"config.json describes (its architecture, outputs) has {size_text(shape)}")
    extra = next(iter(set(found) - set(expected)), None)
    if extra is not None:
        raise DeviseError(f"{path}: tensor {shown(extra)} is not part of the network config.json describes")


def size_text(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape)) or "a scalar"


def non_finite(weights: dict[str, torch.Tensor]) -> Iterator[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return (name for name, tensor in weights.items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()))


def check_finite(weights: dict[str, torch.Tensor], path: Path) -> None:
    """Every weight finite: a NaN would make every score NaN, ranked as if it meant something."""
    bad = next(non_finite(weights), None)
    if bad is not None:
        raise DeviseError(f"{path}: tensor {shown(bad)} holds NaN or infinite values")
