"""A portable model: `devise export` writes safetensors + config.json, `devise.load` reads it back
with no run folder and no pickle, and `encode_image` / `encode_text` / `classify` rank exactly as
the run does; `--onnx` gives the same vectors under onnxruntime."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import devise
from devise.cli import main
from devise.data import load_dataset
from devise.errors import DeviseError
from devise.labels.run_labels import label_space_for
from devise.model.checkpoint import load_run


@pytest.fixture(scope="module")
def exported(toy_runs, tmp_path_factory) -> dict:
    """Both toy runs exported through the command line, the softmax one with its ONNX encoder."""
    root = tmp_path_factory.mktemp("exported")
    assert main(["export", str(toy_runs["devise"]), "--out", str(root / "devise")]) == 0
    assert main(["export", str(toy_runs["softmax"]), "--out", str(root / "softmax"), "--onnx"]) == 0
    return {"devise": root / "devise", "softmax": root / "softmax"}


@pytest.fixture(scope="module")
def val_images() -> torch.Tensor:
    return load_dataset("toy", split="val", image_size=16).images[::7][:48]  # 48 images, every class


def as_arrays(images: torch.Tensor) -> list[np.ndarray]:
    return list(images.permute(0, 2, 3, 1).numpy())


def test_export_writes_safetensors_and_a_readable_json_config(exported, toy_runs):
    folder = exported["devise"]
    assert sorted(p.name for p in folder.iterdir()) == [".devise", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    run = load_run(toy_runs["devise"])
    assert config["kind"] == "embedding" and config["image_size"] == 16
    assert config["architecture"]["body"] == "cnn" and config["label_rule"] == run.config.label_rule
    assert config["label_space"]["name"] == "glove-6b-50d"
    assert config["normalizer"]["mean"] == list(run.preprocess.mean)
    assert config["labels"] == run.class_names
    assert torch.equal(torch.tensor(config["label_vectors"]), run.label_vectors), "the vectors it trained on, exactly"
    header = (folder / "model.safetensors").read_bytes()[:9]
    assert header[8:9] == b"{" and not header.startswith(b"\x80"), "a safetensors header, not a pickle"
    assert (exported["softmax"] / "image_encoder.onnx").is_file()


@pytest.mark.parametrize("kind", ["devise", "softmax"])
def test_an_exported_model_ranks_exactly_as_its_run_folder(exported, toy_runs, val_images, kind):
    exported_model, run_model = devise.load(exported[kind], device="cpu"), devise.load(toy_runs[kind], device="cpu")
    expected = run_model.classify(val_images, run_model.vocabulary("train,words:300"), top=5)
    assert exported_model.classify(val_images, exported_model.vocabulary("train,words:300"), top=5) == expected
    phrases = ["red square", "tiger", "fire truck", "goldfish, Carassius auratus", "blue circle"]
    expected = run_model.classify(val_images, phrases, top=3)
    assert exported_model.classify(val_images, phrases, top=3) == expected
    assert exported_model.classify(as_arrays(val_images), phrases, top=3) == expected


def test_loading_an_exported_model_never_unpickles(exported, val_images, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something unpickled")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, name, refuse)
    model = devise.from_pretrained(exported["devise"], device="cpu")
    ranked = model.classify(val_images[:2], top=3)
    assert len(ranked) == 2 and all(label in model.labels for label, _ in ranked[0])


def test_encode_image_takes_paths_pil_images_arrays_and_uint8_tensors(exported, val_images, tmp_path):
    model = devise.load(exported["devise"], device="cpu")
    images = val_images[:3]
    paths = []
    for i, array in enumerate(as_arrays(images)):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(array).save(paths[-1])
    vectors = model.encode_image(images)
    assert vectors.shape == (3, 50)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5), "unit vectors"
    assert torch.equal(model.encode_image(paths), vectors)
    assert torch.equal(model.encode_image([Image.open(p) for p in paths]), vectors)
    assert torch.equal(model.encode_image(as_arrays(images)), vectors)
    assert torch.allclose(model.encode_image(str(paths[0])), vectors[:1], atol=1e-6), "one image, or a batch"
    bigger = torch.nn.functional.interpolate(images.float(), scale_factor=4).round().to(torch.uint8)
    assert model.encode_image(bigger).shape == (3, 50), "other sizes are resized, as files are"


def test_encode_text_reads_labels_with_the_runs_rule_and_returns_training_labels_as_stored(exported, toy_runs):
    model = devise.load(exported["devise"], device="cpu")
    run = load_run(toy_runs["devise"])
    assert torch.equal(model.encode_text(run.class_names), run.label_vectors)
    new = ["red dog", "goldfish, Carassius auratus", "fire-truck"]
    assert torch.equal(model.encode_text(new), label_space_for(run.config).embed(new))
    assert torch.allclose(model.encode_text("tiger").norm(dim=1), torch.ones(1))
    with pytest.raises(DeviseError, match="no vector in glove-6b-50d for 1 label: 'qzxqzx'"):
        model.encode_text(["tiger", "qzxqzx"])


def test_classify_ranks_any_labels_by_cosine_with_the_image_vectors(exported, val_images):
    model = devise.load(exported["devise"], device="cpu")
    labels = ["red square", "blue circle", "tiger", "fire truck"]
    ranked = model.classify(val_images[:4], labels, top=4)
    cosines = model.encode_image(val_images[:4]) @ model.encode_text(labels).T
    for row, image_cosines in zip(ranked, cosines):
        assert [label for label, _ in row] == [labels[i] for i in image_cosines.argsort(descending=True)]
        assert [score for _, score in row] == pytest.approx(image_cosines.sort(descending=True).values.tolist(),
                                                            abs=1e-5)


def test_a_softmax_model_classifies_by_conse_or_softmax_and_says_what_it_cannot_do(exported, val_images):
    softmax = devise.load(exported["softmax"], device="cpu")
    assert softmax.methods == ("conse", "softmax")
    conse = softmax.classify(val_images[:2], ["red", "square", "dog"], top=2)  # ConSE by default: any labels
    assert all(label in ("red", "square", "dog") for row in conse for label, _ in row)
    probabilities = softmax.classify(val_images[:2], top=3, method="softmax")
    assert all(0 <= p <= 1 and label in softmax.labels for row in probabilities for label, p in row)
    assert softmax.encode_image(val_images[:2]).shape == (2, 50), "a softmax model's image vectors are ConSE's"
    with pytest.raises(DeviseError, match="ranks only the model's training labels"):
        softmax.classify(val_images[:1], ["dog"], method="softmax")
    with pytest.raises(DeviseError, match="'devise' is not available: this is a softmax model"):
        softmax.classify(val_images[:1], method="devise")
    embedding = devise.load(exported["devise"], device="cpu")
    with pytest.raises(DeviseError, match="'conse' is not available: this is an embedding"):
        embedding.classify(val_images[:1], method="conse")
    with pytest.raises(DeviseError, match="top must be positive"):
        embedding.classify(val_images[:1], top=0)


def test_classify_decodes_and_ranks_images_batch_by_batch(exported, val_images, monkeypatch):
    import devise.model.inference as inference

    sizes = []
    real = inference.image_batch

    def counted(images, size, interpolation="bilinear"):
        sizes.append(len(images))
        return real(images, size, interpolation)

    monkeypatch.setattr(inference, "image_batch", counted)
    model = devise.load(exported["devise"], device="cpu")
    in_batches = model.classify(as_arrays(val_images[:20]), top=3, batch_size=8)
    assert sizes == [8, 8, 4]
    whole = model.classify(val_images[:20], top=3)
    assert [[label for label, _ in row] for row in in_batches] == [[label for label, _ in row] for row in whole]


def test_load_takes_a_run_folder_too(toy_runs, exported, val_images):
    from_run = devise.load(toy_runs["devise"], device="cpu")
    from_export = devise.load(exported["devise"], device="cpu")
    assert from_run.classify(val_images, top=5) == from_export.classify(val_images, top=5)


def test_the_onnx_image_encoder_gives_the_pytorch_vectors(exported, val_images):
    import onnxruntime

    model = devise.load(exported["softmax"], device="cpu")
    session = onnxruntime.InferenceSession(str(exported["softmax"] / "image_encoder.onnx"))
    assert [i.type for i in session.get_inputs()] == ["tensor(uint8)"]
    vectors, logits = session.run(["embeddings", "logits"], {"images": val_images.numpy()})
    assert np.abs(vectors - model.encode_image(val_images).numpy()).max() < 1e-4
    batch = torch.cat([model.forward(val_images[i : i + 16]) for i in range(0, len(val_images), 16)])
    assert np.abs(logits - batch.numpy()).max() < 1e-4
    assert json.loads((exported["softmax"] / "config.json").read_text())["onnx"]["file"] == "image_encoder.onnx"


def test_export_and_load_mistakes_are_one_clear_line(toy_runs, exported, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"devise: error: {tmp_path / 'nowhere'}: no such run folder"]
    assert main(["export", str(toy_runs["devise"]), "--out", str(toy_runs["softmax"])]) == 2
    assert "is a run folder; export to a folder of its own" in capsys.readouterr().err

    with pytest.raises(DeviseError, match="neither an exported devise model"):
        devise.load(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((exported["devise"] / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"\x80\x04 a pickle, say")
    with pytest.raises(DeviseError, match="model.safetensors is not a safetensors file"):
        devise.load(broken)
    (broken / "config.json").write_text('{"format": "something else"}')
    with pytest.raises(DeviseError, match="is not a devise model config"):
        devise.load(broken)
    config = json.loads((exported["devise"] / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "outputs": 7}))
    (broken / "model.safetensors").write_bytes((exported["devise"] / "model.safetensors").read_bytes())
    with pytest.raises(DeviseError, match="config.json: outputs must be label_space.dim"):
        devise.load(broken)


def test_export_says_what_it_writes(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["export", "--help"])
    assert exit.value.code == 0 and "--onnx" in capsys.readouterr().out


def model_files(folder) -> dict[str, object]:
    """An exported folder's files and what they hold: the weights as tensors (safetensors may order
    its header differently from one write to the next), the ONNX encoder by its name only."""
    from safetensors.torch import load_file

    def held(path):
        if path.suffix == ".safetensors":
            return {name: tensor.numpy().tobytes() for name, tensor in load_file(path).items()}
        return None if path.suffix == ".onnx" else path.read_bytes()

    return {path.name: held(path) for path in sorted(folder.iterdir())}


def test_an_export_killed_at_any_file_leaves_the_earlier_export_whole(toy_runs, tmp_path, monkeypatch):
    from conftest import Killed, kill_at

    from devise.model.export import export

    out = tmp_path / "model"
    export(toy_runs["devise"], out)
    earlier = model_files(out)
    fresh = model_files(export(toy_runs["softmax"], tmp_path / "fresh"))
    for n, onnx in [(1, False), (2, True), (2, False), (3, False), (4, False), (5, False)]:
        with monkeypatch.context() as patch:
            kill_at(patch, n)  # the marker, (the ONNX encoder,) the weights, config.json, the folder; then done
            try:
                export(toy_runs["softmax"], out, onnx=onnx)
                finished = True
            except Killed:
                finished = False
        assert model_files(out) == (fresh if finished else earlier), (n, onnx)
        assert devise.load(out, device="cpu").config["run"] == ("softmax" if finished else "devise")
        assert sorted(path.name for path in tmp_path.iterdir()) == ["fresh", "model"], "nothing left beside it"
    assert finished


def test_export_refuses_a_folder_of_the_users_and_a_file_with_one_line(toy_runs, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "own settings"}')
    assert main(["export", str(toy_runs["devise"]), "--out", str(mine)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"devise: error: {mine} holds files devise did not write (config.json): choose another folder"]
    assert (mine / "config.json").read_text() == '{"my": "own settings"}' and len(list(mine.iterdir())) == 1
    (tmp_path / "a-file").write_text("mine")
    assert main(["export", str(toy_runs["devise"]), "--out", str(tmp_path / "a-file")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"devise: error: {tmp_path / 'a-file'} is a file, not a folder: give a folder of its own"]
    assert (tmp_path / "a-file").read_text() == "mine"


def test_an_export_written_before_the_marker_is_still_replaced_by_a_new_one(toy_runs, tmp_path):
    from devise.model.export import export

    out = export(toy_runs["devise"], tmp_path / "model")
    (out / ".devise").unlink()  # as devise exported before folders had a marker
    export(toy_runs["softmax"], out)
    assert devise.load(out, device="cpu").config["run"] == "softmax" and (out / ".devise").is_file()


@pytest.mark.parametrize("n", [3, 4], ids=["before config.json", "before the folder"])
def test_an_export_killed_by_sigkill_leaves_the_earlier_export_and_the_next_export_clears_what_it_left(
        toy_runs, tmp_path, n):
    import subprocess
    import sys

    from devise.model.export import export

    out = export(toy_runs["devise"], tmp_path / "model")
    earlier = model_files(out)
    killed = (f"import os, signal\nfrom devise import files\nfrom devise.model.export import export\ncount = [0]\n"
              f"real = files.place\n"
              f"def place(source, target):\n    count[0] += 1\n"
              f"    if count[0] == {n}: os.kill(os.getpid(), signal.SIGKILL)\n    real(source, target)\n"
              f"files.place = place\nexport({str(toy_runs['softmax'])!r}, {str(out)!r})\n")
    result = subprocess.run([sys.executable, "-c", killed], capture_output=True, text=True, check=False)
    assert result.returncode == -9, result.stderr
    assert model_files(out) == earlier and devise.load(out, device="cpu").config["run"] == "devise"
    assert len(list(tmp_path.iterdir())) == 2, "the killed export's temporary folder is left beside it"
    export(toy_runs["softmax"], out)
    assert devise.load(out, device="cpu").config["run"] == "softmax"
    assert [path.name for path in tmp_path.iterdir()] == ["model"], "and the next export removes it"
