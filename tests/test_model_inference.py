"""`DeviseModel`, the one inference API: its precision is a setting (float32 by default, so that its
vectors are its ONNX export's on any host), image tensors come as uint8 or as torchvision's floats,
and a command's inputs are checked before any model is loaded or any label encoded."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import devise
import devise.hardware
import devise.labels.phrases
import devise.model.export
from devise.cli import main
from devise.data import load_dataset
from devise.errors import DeviseError


@pytest.fixture(scope="module")
def exported(toy_runs, tmp_path_factory) -> dict:
    """The toy softmax run exported with its ONNX encoder, once as trained (float32) and once
    marked as trained in bf16, as a run on a bf16 host would be."""
    root = tmp_path_factory.mktemp("inference")
    assert main(["export", str(toy_runs["softmax"]), "--out", str(root / "softmax"), "--onnx"]) == 0
    shutil.copytree(root / "softmax", root / "bf16-trained")
    config = json.loads((root / "bf16-trained" / "config.json").read_text())
    (root / "bf16-trained" / "config.json").write_text(json.dumps({**config, "bf16": True}))
    return {"softmax": root / "softmax", "bf16-trained": root / "bf16-trained"}


@pytest.fixture(scope="module")
def val_images() -> torch.Tensor:
    return load_dataset("toy", split="val", image_size=16).images[::9][:32]


def onnx_outputs(folder, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / "image_encoder.onnx"))
    vectors, logits = session.run(["embeddings", "logits"], {"images": images.numpy()})
    return vectors, logits


def test_a_model_trained_in_bf16_computes_in_float32_by_default_and_gives_its_onnx_exports_vectors(
        exported, val_images):
    model = devise.load(exported["bf16-trained"], device="cpu")
    assert model.precision == "float32" and not model.bf16
    vectors, logits = onnx_outputs(exported["bf16-trained"], val_images)
    assert np.abs(vectors - model.encode_image(val_images).numpy()).max() < 1e-4
    assert np.abs(logits - model.forward(val_images).numpy()).max() < 1e-4


def test_bf16_precision_is_a_setting_and_changes_the_arithmetic(exported, val_images):
    full = devise.load(exported["softmax"], device="cpu")
    half = devise.load(exported["softmax"], device="cpu", precision="bf16")
    assert half.precision == "bf16" and half.bf16
    assert not torch.equal(half.forward(val_images), full.forward(val_images))
    assert (half.encode_image(val_images) - full.encode_image(val_images)).abs().max() < 0.1


def test_auto_precision_is_bf16_exactly_where_the_device_computes_it_natively(exported, monkeypatch):
    model = devise.load(exported["softmax"], device="cpu", precision="auto")
    monkeypatch.setattr(devise.hardware, "bf16_native", lambda device: True)
    assert model.bf16
    monkeypatch.setattr(devise.hardware, "bf16_native", lambda device: False)
    assert not model.bf16


def test_an_unknown_precision_is_one_clear_line_before_anything_is_loaded(monkeypatch):
    monkeypatch.setattr(devise.model.export, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(DeviseError, match="precision must be float32, bf16, auto, not 'fp16'"):
        devise.load("anything", precision="fp16")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_float_image_tensors_in_0_1_rank_exactly_as_their_uint8_images(exported, val_images, dtype):
    model = devise.load(exported["softmax"], device="cpu")
    as_floats = (val_images.double() / 255).to(dtype)
    assert torch.equal(model.encode_image(as_floats), model.encode_image(val_images))
    assert model.classify(as_floats[0], top=3) == model.classify(val_images[0], top=3)  # one 3 x H x W image


@pytest.mark.parametrize("values, shown", [(255.0, "[0, 255]"), (-0.5, "[-0.5, 0]"), (float("nan"), "nan")])
def test_float_image_tensors_outside_0_1_are_one_clear_line(exported, values, shown):
    model = devise.load(exported["softmax"], device="cpu")
    images = torch.zeros(2, 3, 16, 16)
    images[0, 0, 0, 0] = values
    with pytest.raises(DeviseError, match=r"must hold values in \[0, 1\]") as error:
        model.encode_image(images)
    assert shown in str(error.value)
    with pytest.raises(DeviseError, match="uint8 .* or float"):
        model.encode_image(torch.zeros(2, 3, 16, 16, dtype=torch.int64))


def write_image(path, size: int = 20):
    Image.fromarray(np.full((size, size, 3), 120, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def nothing_heavy(monkeypatch):
    """Loading a model or encoding a phrase fails the test: a bad input must be found first."""
    monkeypatch.setattr(devise.model.export, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setattr(devise.labels.phrases, "encode_and_cache", lambda *a, **k: pytest.fail("phrases were encoded"))


@pytest.mark.parametrize("mistake, vocabulary, message", [
    ("a missing image", "train,words:20000", "none.png: no such image file"),
    ("a file that is not an image", "train,words:20000", "is not a readable image"),
    ("a misspelt vocabulary", "train,wrds:20000", "unknown vocabulary part 'wrds:20000'"),
    ("words without a count", "train,words:many", "use words:N with N a positive number"),
    ("a missing vocabulary file", "train,file:nowhere.txt", "nowhere.txt: no such file"),
    ("WordNet hops with no target", "wordnet:2hop", "only wordnet:all applies here"),
])
def test_predict_finds_a_bad_input_at_once_before_loading_a_model_or_encoding_a_vocabulary(
        exported, tmp_path, capsys, nothing_heavy, mistake, vocabulary, message):
    image = write_image(tmp_path / "photo.png")
    images = {"a missing image": [str(image), str(tmp_path / "none.png")],
              "a file that is not an image": [str(image), str(tmp_path / "notes.png")]}.get(mistake, [str(image)])
    (tmp_path / "notes.png").write_text("not an image")
    assert main(["predict", str(exported["softmax"]), *images, "--conse", "--vocabulary", vocabulary]) == 2
    assert message in capsys.readouterr().err


def test_predict_takes_an_exported_model_folder_in_the_precision_asked(exported, tmp_path, capsys):
    image = write_image(tmp_path / "photo.png")
    assert main(["predict", str(exported["softmax"]), str(image), "--top", "3", "--json", "--precision", "bf16"]) == 0
    ranked = json.loads(capsys.readouterr().out)["labels"]
    assert len(ranked) == 3 and all(0 <= entry["score"] <= 1 for entry in ranked)


def test_a_vocabulary_misspelt_in_the_library_costs_no_label_space_loaded(exported, monkeypatch):
    model = devise.load(exported["softmax"], device="cpu")
    monkeypatch.setattr(type(model), "text_space", lambda self: pytest.fail("the label space was loaded"))
    with pytest.raises(DeviseError, match="unknown vocabulary part 'word:5'"):
        model.vocabulary("train,word:5")
