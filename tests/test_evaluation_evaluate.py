"""`devise evaluate`: hit@k over a model's training classes, for a run folder on its own split and
for an exported model or a pretrained classifier on a dataset named with it."""

from __future__ import annotations

import shutil

import pytest
import torch

import devise.model.export
from devise.cli import main
from devise.data.base import ImageSet
from devise.errors import DeviseError
from devise.evaluation.evaluate import evaluate_run, images_of_model_classes


def test_an_exported_model_evaluated_on_its_dataset_scores_as_its_run_folder(toy_runs, tmp_path, capsys):
    run = shutil.copytree(toy_runs["softmax"], tmp_path / "run")  # evaluate writes metrics.json into a run
    assert main(["export", str(run), "--out", str(tmp_path / "model")]) == 0
    from_run = evaluate_run(run, device="cpu", progress=False)
    from_export = evaluate_run(tmp_path / "model", data="toy", split="val", device="cpu", progress=False)
    assert from_export["images"] == from_run["images"] and from_export["classes"] == from_run["classes"]
    assert {k: v for k, v in from_export.items() if k.startswith("hit@")} == {
        k: v for k, v in from_run.items() if k.startswith("hit@")}
    assert not (tmp_path / "model" / "metrics.json").exists()


def test_a_model_that_is_not_a_run_folder_needs_its_dataset_named_before_anything_is_loaded(
        toy_runs, tmp_path, capsys, monkeypatch):
    assert main(["export", str(toy_runs["devise"]), "--out", str(tmp_path / "model")]) == 0
    monkeypatch.setattr(devise.model.export, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    for model in (str(tmp_path / "model"), "efficientnet-lite0"):
        assert main(["evaluate", str(toy_runs["devise"]), model]) == 2
        assert "is not a run folder, so it does not record the dataset it was trained on" in capsys.readouterr().err
    with pytest.raises(DeviseError, match="--data must be one of"):
        evaluate_run(tmp_path / "model", data="imagenet")


def test_a_dataset_with_none_of_the_models_classes_is_one_clear_line(toy_runs):
    model = devise.load(toy_runs["softmax"], device="cpu")
    images = ImageSet(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]), ["unicorn", "dragon"])
    with pytest.raises(DeviseError, match="none of the 2 classes of the test set is among the 40 labels"):
        images_of_model_classes(model, images, "the test set")
