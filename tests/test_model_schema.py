"""A model folder is checked before it is used: a tampered config.json or model.safetensors is one
line naming the folder and the field, through `devise.load`, `devise predict` and `devise serve`,
and nothing in a folder makes devise read a file outside it."""

from __future__ import annotations

import builtins
import io
import json
import math
import shutil
import struct
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import devise
from devise.cli import main
from devise.errors import DeviseError
from devise.model.export import export
from devise.serve import app as serve_app

SECRET = "root:*:20228:0:99999:7::: TOPSECRET"


@pytest.fixture(scope="module")
def models(toy_runs, tmp_path_factory) -> dict[str, Path]:
    """Both toy runs exported once: every case copies one and tampers with one thing."""
    root = tmp_path_factory.mktemp("schema-models")
    return {kind: export(toy_runs[kind], root / kind) for kind in ("devise", "softmax")}


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> Path:
    """A file outside every model folder, in the format a vectors file would have: were it read as
    one, its first word would be quoted in the error."""
    path = tmp_path_factory.mktemp("outside") / "shadow"
    path.write_text(f"{SECRET} 0 0 0\n")
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "red.png"
    Image.new("RGB", (20, 20), (200, 30, 30)).save(path)
    return path


def copied(models: dict[str, Path], kind: str, to: Path) -> Path:
    folder = to / f"tampered-{kind}"
    shutil.copytree(models[kind], folder)
    return folder


def edit_config(folder: Path, change) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def edit_weights(folder: Path, change) -> None:
    path = folder / "model.safetensors"
    weights = load_file(path)
    change(weights)
    save_file({name: tensor.contiguous() for name, tensor in weights.items()}, path)


def edit_bytes(folder: Path, change) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(change(path.read_bytes()))


def setter(*keys, value):
    """A change that sets config[keys[0]][keys[1]]... to `value` (a callable gets the config)."""
    def change(config):
        target = config
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value(config) if callable(value) else value
    return change


def remover(*keys):
    def change(config):
        target = config
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return change


def vectors_change(edit):
    def change(config):
        edit(config["label_vectors"])
    return change


def first_row_set(index, value):
    return vectors_change(lambda rows: rows[0].__setitem__(index, value))


def header_length(data: bytes, length: int) -> bytes:
    return struct.pack("<Q", length) + data[8:]


def header_edit(edit):
    """model.safetensors with its JSON header edited (the tensor data as it was)."""
    def change(data: bytes) -> bytes:
        length = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8 : 8 + length])
        edit(header)
        text = json.dumps(header).encode()
        return struct.pack("<Q", len(text)) + text + data[8 + length :]
    return change


def first_tensor(header: dict) -> dict:
    return next(entry for name, entry in header.items() if name != "__metadata__")


def nan_in(name):
    def change(weights):
        weights[name] = weights[name].clone()
        weights[name].view(-1)[0] = math.nan
    return change


def raw_text(text: str | bytes):
    def write(folder: Path) -> None:
        path = folder / "config.json"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
    return write


C, W, B = edit_config, edit_weights, edit_bytes
OUT = "../../../../../../../../etc/shadow"
# (case, which model, what is done to its folder, the field the one line names)
CASES = [
    ("format_version as text", "devise", (C, setter("format_version", value="2")), "format_version"),
    ("format_version from the future", "devise", (C, setter("format_version", value=3)), "format version 3"),
    ("format_version 0", "devise", (C, setter("format_version", value=0)), "format_version"),
    ("not a devise format", "devise", (C, setter("format", value="other")), '"format"'),
    ("labels an int", "softmax", (C, setter("labels", value=5)), "labels"),
    ("labels empty", "devise", (C, setter("labels", value=[])), "labels"),
    ("a label a number", "devise", (C, lambda c: c["labels"].__setitem__(3, 7)), "labels[3]"),
    ("ragged label vectors", "devise", (C, vectors_change(lambda rows: rows[3].pop())), "label_vectors[3]"),
    ("a label vector as text", "devise", (C, vectors_change(lambda rows: rows.__setitem__(0, "abc"))),
     "label_vectors[0]"),
    ("text in a label vector", "softmax", (C, first_row_set(4, "x")), "label_vectors"),
    ("49-d label vectors", "devise", (C, vectors_change(lambda rows: [row.pop() for row in rows])), "label_vectors[0]"),
    ("49-d label vectors and dim", "devise",
     (C, lambda c: (c["label_space"].__setitem__("dim", 49), [row.pop() for row in c["label_vectors"]])), "outputs"),
    ("a label vector too few", "devise", (C, vectors_change(lambda rows: rows.pop())), "label_vectors"),
    ("NaN in a label vector", "devise", (C, vectors_change(lambda rows: rows[2].__setitem__(5, math.nan))),
     "label_vectors[2]"),
    ("1e400 in a label vector", "softmax", (C, first_row_set(1, 1e400)), "label_vectors[0]"),
    ("1e39 in a label vector", "softmax", (C, first_row_set(1, 1e39)), "label_vectors[0]"),
    ("a huge whole number in a label vector", "devise", (C, first_row_set(1, 10**400)), "label_vectors"),
    ("image_size as text", "devise", (C, setter("image_size", value="abc")), "image_size"),
    ("image_size 1e400", "devise", (C, setter("image_size", value=1e400)), "image_size"),
    ("image_size 100000", "devise", (C, setter("image_size", value=100000)), "image_size"),
    ("image_size 0", "devise", (C, setter("image_size", value=0)), "image_size"),
    ("image_size 4", "softmax", (C, setter("image_size", value=4)), "image_size"),
    ("image_size 16.0", "softmax", (C, setter("image_size", value=16.0)), "image_size"),
    ("a normaliser of 2 values", "devise", (C, setter("normalizer", "mean", value=[1.0, 2.0])), "normalizer.mean"),
    ("a normaliser std of 0", "devise", (C, setter("normalizer", "std", value=[0, 50, 50])), "normalizer.std[0]"),
    ("a normaliser std NaN", "softmax", (C, setter("normalizer", "std", value=[50, math.nan, 50])),
     "normalizer.std[1]"),
    ("a normaliser without std", "devise", (C, remover("normalizer", "std")), "normalizer.std"),
    ("width 100000", "devise", (C, setter("architecture", "width", value=100000)), "architecture.width"),
    ("width -8", "devise", (C, setter("architecture", "width", value=-8)), "architecture.width"),
    ("width as text", "softmax", (C, setter("architecture", "width", value="8")), "architecture.width"),
    ("width 16", "softmax", (C, setter("architecture", "width", value=16)), "model.safetensors: tensor"),
    ("hidden 1e9", "devise", (C, setter("architecture", "hidden", value=1e9)), "architecture.hidden"),
    ("hidden 10**9", "devise", (C, setter("architecture", "hidden", value=10**9)), "model.safetensors: tensor"),
    ("embed_hidden 1e9", "devise", (C, setter("architecture", "embed_hidden", value=1e9)),
     "architecture.embed_hidden"),
    ("embed_hidden 10**9", "devise", (C, setter("architecture", "embed_hidden", value=10**9)),
     "model.safetensors: tensor"),
    ("architecture without width", "devise", (C, remover("architecture", "width")), "architecture.width"),
    ("dropout 1.5", "devise", (C, setter("architecture", "dropout", value=1.5)), "architecture.dropout"),
    ("an unknown body", "devise", (C, setter("architecture", "body", value="vgg")), "architecture.body"),
    ("stem_pool as text", "devise", (C, setter("architecture", "stem_pool", value="yes")), "architecture.stem_pool"),
    ("outputs 1e9", "softmax", (C, setter("outputs", value=1e9)), "outputs"),
    ("outputs 10**9", "softmax", (C, setter("outputs", value=10**9)), "outputs"),
    ("outputs not the labels", "softmax", (C, setter("outputs", value=7)), "outputs"),
    ("an unknown kind", "devise", (C, setter("kind", value="regression")), "kind"),
    ("replacements a list", "devise", (C, setter("replacements", value=[1, 2])), "replacements"),
    ("a replacement a number", "devise", (C, setter("replacements", value={"a": 3})), "replacements['a']"),
    ("conse_top as text", "softmax", (C, setter("conse_top", value="x")), "conse_top"),
    ("conse_top -5", "softmax", (C, setter("conse_top", value=-5)), "conse_top"),
    ("conse_top beyond the labels", "softmax", (C, setter("conse_top", value=10**6)), "conse_top"),
    ("an unknown label rule", "devise", (C, setter("label_rule", value="best")), "label_rule"),
    ("an unknown label space", "devise", (C, setter("label_space", "source", value="pickle")), "label_space.source"),
    ("label_space.dim as text", "devise", (C, setter("label_space", "dim", value="50")), "label_space.dim"),
    ("a vectors path out of the folder", "devise",
     (C, lambda c: c["label_space"].update(source="glove-text", path=OUT)), "label_space.path"),
    ("a path for a packaged space", "devise", (C, setter("label_space", "path", value="vectors.txt")),
     "label_space.path"),
    ("prompts naming a file", "devise",
     (C, lambda c: c["label_space"].update(source="minilm", prompts="/etc/passwd")), "label_space.prompts"),
    ("a prompt without a place for the label", "devise",
     (C, lambda c: c["label_space"].update(source="minilm", prompts=["a photo"])), "label_space.prompts"),
    ("a centre of the wrong size", "devise", (C, setter("label_space", "centre", value=[0.0] * 3)),
     "label_space.centre"),
    ("a NaN centre", "devise", (C, setter("label_space", "centre", value=[math.nan] * 50)), "label_space.centre[0]"),
    ("random_vectors as text", "devise", (C, setter("label_space", "random_vectors", value="no")),
     "label_space.random_vectors"),
    ("seed -1", "devise", (C, setter("label_space", "seed", value=-1)), "label_space.seed"),
    ("label_ids of the wrong length", "devise", (C, setter("label_ids", value=["n01"])), "label_ids"),
    ("label_ids numbers", "devise", (C, setter("label_ids", value=lambda c: [5] * len(c["labels"]))), "label_ids[0]"),
    ("body_trained_on as text", "devise", (C, setter("body_trained_on", value="x")), "body_trained_on"),
    ("a pipeline of another size", "devise",
     (C, setter("preprocess", value={"mean": [1, 2, 3], "std": [4, 5, 6], "size": 32})), "preprocess.size"),
    ("a crop share that resizes to a million pixels", "devise",
     (C, setter("preprocess", value={"mean": [1, 2, 3], "std": [4, 5, 6], "size": 16, "crop_pct": 1e-5})),
     "preprocess.crop_pct"),
    ("an unknown interpolation", "devise",
     (C, setter("preprocess", value={"mean": [1, 2, 3], "std": [4, 5, 6], "size": 16, "interpolation": "lanczos"})),
     "preprocess.interpolation"),
    ("a pipeline std of 0", "devise", (C, setter("preprocess", value={"mean": [1, 2, 3], "std": [4, 0, 6]})),
     "preprocess.std[1]"),
    ("stock as text", "softmax", (C, setter("stock", value="yes")), "stock"),
    ("a config that is a list", "devise", (raw_text("[1, 2]"), None), "not a devise model config"),
    ("a config that is not JSON", "devise", (raw_text("{not json"), None), "not valid JSON"),
    ("an empty config", "devise", (raw_text(""), None), "not valid JSON"),
    ("a config not UTF-8", "devise", (raw_text(b'{"format": "\xff"}'), None), "UTF-8"),
    ("JSON nested 200,000 deep", "devise", (raw_text("[" * 200_000 + "]" * 200_000), None), "nests deeper"),
    ("JSON nested 200,000 deep in a key", "softmax", (raw_text('{"format": "devise-model", "x": ' + "[" * 200_000
                                                               + "]" * 200_000 + "}"), None), "nests deeper"),
    ("JSON nested 20 deep", "devise", (C, setter("extra", value=json.loads("[" * 20 + "]" * 20))), "nests deeper"),
    ("a tensor of another shape", "devise", (W, lambda w: w.__setitem__("head.project.weight", w["head.project.weight"][:, :-1])),
     "tensor 'head.project.weight'"),
    ("a tensor missing", "softmax", (W, lambda w: w.pop("head.bias")), "tensor 'head.bias' is missing"),
    ("an extra tensor", "devise", (W, lambda w: w.__setitem__("extra.weight", torch.zeros(3))), "tensor 'extra.weight'"),
    ("NaN in a weight", "devise", (W, nan_in("head.project.weight")), "tensor 'head.project.weight' holds NaN"),
    ("NaN in a batch-norm statistic", "softmax", (W, nan_in("body.0.0.1.running_var")), "holds NaN"),
    ("a header length larger than the file", "devise", (B, lambda d: header_length(d, len(d) * 2)), "header length"),
    ("a header length of 2**63", "devise", (B, lambda d: header_length(d, 2**63)), "header length"),
    ("a file of 3 bytes", "softmax", (B, lambda d: d[:3]), "header length"),
    ("the tensor data cut short", "devise", (B, lambda d: d[:-100]), "data_offsets"),
    ("a header that is not JSON", "devise", (B, lambda d: struct.pack("<Q", 5) + b"{nope" + d[8:]), "not valid JSON"),
    ("a shape its bytes do not hold", "devise",
     (B, header_edit(lambda h: first_tensor(h).__setitem__("shape", [10**6, 10**6]))), "shape"),
    ("a shape of other bytes than its offsets", "devise",
     (B, header_edit(lambda h: h["body.0.0.0.weight"].__setitem__("shape", [8, 3, 3, 2]))), "data_offsets"),
    ("architecture as text", "devise", (C, setter("architecture", value="cnn")), "architecture"),
    ("label_space as text", "softmax", (C, setter("label_space", value="glove")), "label_space"),
    ("a normaliser as a list", "softmax", (C, setter("normalizer", value=[1, 2, 3])), "normalizer"),
    ("an unknown dtype", "softmax", (B, header_edit(lambda h: first_tensor(h).__setitem__("dtype", "F99"))), "dtype"),
    ("no weights file", "devise", (lambda folder: (folder / "model.safetensors").unlink(), None),
     "no such weights file"),
]


def tamper(models, kind, how, tmp_path) -> Path:
    folder = copied(models, kind, tmp_path)
    edit, change = how
    edit(folder, change) if change is not None else edit(folder)
    return folder


def one_line_naming(message: str, folder: Path, field: str) -> None:
    assert "\n" not in message.strip(), message
    assert str(folder) in message, message
    assert field in message, message
    assert "TOPSECRET" not in message


@pytest.mark.parametrize("case, kind, how, field", CASES, ids=[case[0] for case in CASES])
def test_a_tampered_folder_is_refused_by_devise_load_in_one_line_naming_the_folder_and_the_field(
        models, tmp_path, case, kind, how, field):
    folder = tamper(models, kind, how, tmp_path)
    with pytest.raises(DeviseError) as refused:
        devise.load(folder, device="cpu")
    one_line_naming(str(refused.value), folder, field)


def test_the_matrix_holds_at_least_fifty_tampered_folders():
    assert len(CASES) >= 50 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case, kind, how, field", CASES, ids=[case[0] for case in CASES])
def test_devise_predict_on_a_tampered_folder_is_one_line_and_exit_2(models, tmp_path, image, capsys,
                                                                     case, kind, how, field):
    folder = tamper(models, kind, how, tmp_path)
    assert main(["predict", str(folder), str(image), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    one_line_naming(captured.err, folder, field)


class WouldListen(Exception):
    """`devise serve` got as far as listening: the folder was taken."""


@pytest.mark.parametrize("case, kind, how, field", CASES, ids=[case[0] for case in CASES])
def test_devise_serve_on_a_tampered_folder_is_one_line_and_exit_2(models, tmp_path, capsys, monkeypatch,
                                                                   case, kind, how, field):
    monkeypatch.setattr(serve_app, "listening_socket", lambda *args: (_ for _ in ()).throw(WouldListen()))
    folder = tamper(models, kind, how, tmp_path)
    assert main(["serve", str(folder), "--port", "0", "--words", "0", "--device", "cpu"]) == 2
    one_line_naming(capsys.readouterr().err, folder, field)


@pytest.fixture
def opened(monkeypatch) -> list[Path]:
    """Every path opened through Python's open (builtins, io, pathlib) while the test runs."""
    paths: list[Path] = []
    real_open = io.open

    def recording(file, *args, **kwargs):
        if isinstance(file, (str, Path)):
            paths.append(Path(file).resolve())
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording)
    monkeypatch.setattr(io, "open", recording)
    return paths


@pytest.mark.parametrize("path", ["relative", "absolute"])
def test_a_vectors_path_outside_the_folder_is_never_read_through_load_predict_or_serve(
        models, secret, image, tmp_path, capsys, monkeypatch, opened, path):
    folder = copied(models, "devise", tmp_path)
    recorded = str(secret) if path == "absolute" else "../" * len(folder.parts) + str(secret).lstrip("/")
    edit_config(folder, lambda c: c["label_space"].update(source="glove-text", path=recorded,
                                                          name="glove-text:shadow"))
    messages = []
    try:
        model = devise.load(folder, device="cpu")
        messages.append(pytest.raises(DeviseError, model.encode_text, ["an unseen phrase"]).value)
        service = serve_app.Service({"model": model}, list(model.labels), 10**6)
        messages.append(pytest.raises(DeviseError, service.candidates, 0, ["a zebra"]).value)  # a request's labels
    except DeviseError as error:  # the relative path is refused when loading
        messages.append(error)
    assert main(["predict", str(folder), str(image), "--device", "cpu"]) == 2
    messages.append(capsys.readouterr().err)
    for message in map(str, messages):
        one_line_naming(message, folder, "label_space.path")
    assert (folder / "config.json").resolve() in opened, "the recorder sees what devise opens"
    assert secret.resolve() not in opened


def test_a_vectors_file_copied_into_the_folder_is_read_from_there(models, tmp_path):
    folder = copied(models, "devise", tmp_path)
    words = ["zebra", "apple"]
    (folder / "vecs.txt").write_text("".join(f"{word} " + " ".join(["0.5"] * 50) + "\n" for word in words))
    edit_config(folder, lambda c: c["label_space"].update(source="glove-text", path="/elsewhere/vecs.txt",
                                                          name="glove-text:vecs.txt"))
    vectors = devise.load(folder, device="cpu").encode_text(["zebra"])
    assert vectors.shape == (1, 50) and torch.isfinite(vectors).all()


def test_an_export_carries_its_vectors_file_inside_it(models, tmp_path):
    from devise.model.export import save

    vectors = tmp_path / "elsewhere" / "vecs.txt"
    vectors.parent.mkdir()
    vectors.write_text("".join(f"{word} " + " ".join([str(i + 1)] * 50) + "\n" for i, word in enumerate(["zebra", "apple"])))
    model = devise.load(models["devise"], device="cpu")
    model.config["label_space"].update(source="glove-text", path=str(vectors), name="glove-text:vecs.txt")
    out = save(model, tmp_path / "carried")
    assert (out / "vectors" / "vecs.txt").read_bytes() == vectors.read_bytes()
    assert json.loads((out / "config.json").read_text())["label_space"]["path"] == "vectors/vecs.txt"
    vectors.unlink()  # the model no longer needs the file where it was trained
    assert devise.load(out, device="cpu").encode_text(["zebra"]).shape == (1, 50)


def test_a_folder_devise_wrote_before_format_2_still_loads_and_ranks_the_same(models, tmp_path, image):
    folder = copied(models, "devise", tmp_path)

    def as_format_1(config):
        config["format_version"] = 1
        config["architecture"]["model"] = config["architecture"].pop("body")
        for key in ("preprocess", "conse_top", "label_ids", "body_trained_on", "stock", "timm"):
            config.pop(key, None)
            config["architecture"].pop(key, None)

    edit_config(folder, as_format_1)
    old, new = devise.load(folder, device="cpu"), devise.load(models["devise"], device="cpu")
    assert old.classify([image], top=3) == new.classify([image], top=3)


def test_loading_a_checked_folder_allocates_no_tensor_before_its_header_is_checked(models, tmp_path, monkeypatch):
    folder = copied(models, "devise", tmp_path)
    edit_config(folder, setter("architecture", "embed_hidden", value=10**9))
    from devise.model import network

    built = []
    real = network.build_network
    monkeypatch.setattr("devise.model.export.build_network",
                        lambda *a, **k: built.append(torch.empty(0).device) or real(*a, **k))
    with pytest.raises(DeviseError, match="tensor"):
        devise.load(folder, device="cpu")
    assert built == [torch.device("meta")], "only the shapes were built, on the meta device"
