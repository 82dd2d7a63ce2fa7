"""Calibrated stacking's constant, chosen on class splits of the seen classes."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from conftest import HELD_OUT, toy_settings

import devise as devise_api
import devise.training.loop as training
from devise.training import runs


def test_a_frozen_body_devise_run_chooses_its_calibration_constant_on_class_splits(held_out_runs, tmp_path):
    from devise.evaluation.zeroshot import ZeroShotRequest, run_zero_shot

    softmax, unfrozen = held_out_runs
    frozen = training.train(toy_settings(**HELD_OUT, head="embedding", epochs=2, freeze_epochs=2, init=str(softmax.folder),
                                        out=str(tmp_path / "frozen")), progress=False)
    calibration = runs.read_calibration(frozen.folder)
    unseen = json.loads((softmax.folder / "unseen.json").read_text())["ids"]
    assert calibration["method"] == "class split" and len(calibration["splits"]) == 3
    for split in calibration["splits"]:  # pseudo-unseen classes are seen classes, as many as the unseen
        assert len(split["pseudo_unseen"]) == 8 and set(split["pseudo_unseen"]) <= set(frozen.class_ids)
        assert not set(split["pseudo_unseen"]) & set(unseen) and 0 <= split["harmonic"] <= 1
    assert calibration["gamma"] == pytest.approx(sum(s["gamma"] for s in calibration["splits"]) / 3)
    assert runs.read_calibration(unfrozen.folder) is None  # its body trained: no head alone can be redone
    results = run_zero_shot(ZeroShotRequest([frozen.folder, unfrozen.folder], "unseen", vocabulary="target", out=tmp_path / "zs",
                            examples=0, progress=False))
    by_folder = {name.split("(")[-1].rstrip(")"): m for name, m in results["models"].items()}
    assert by_folder["frozen"]["calibration"] == "class split"
    assert by_folder["frozen"]["gzsl_gamma"] == pytest.approx(calibration["gamma"])
    assert by_folder["devise"]["calibration"] == "seen share"


def test_conse_chooses_its_calibration_constant_on_class_splits_in_the_space_compared_in(held_out_runs, tmp_path):
    from devise.evaluation.zeroshot import ZeroShotRequest, comparison_space, run_zero_shot
    from devise.training.calibration import class_split_constant

    softmax, devise = held_out_runs
    results = run_zero_shot(ZeroShotRequest([devise.folder, softmax.folder], "unseen", vocabulary="target", out=tmp_path / "zs",
                            examples=0, progress=False))
    conse = next(m for m in results["models"].values() if m["kind"] == "ConSE")
    assert conse["calibration"] == "class split"
    # The same constant as the softmax run's last layer redone on three splits, read in the DeViSE run's space.
    train_set = runs.run_split(softmax.config, softmax.folder, "train", progress=False)
    val_set = runs.run_split(softmax.config, softmax.folder, progress=False)
    models = [devise_api.load(devise.folder, device="cpu"), devise_api.load(softmax.folder, device="cpu")]
    space = comparison_space(models)
    chosen = class_split_constant(softmax.config, lambda data: models[1].body_outputs(data, progress=False), train_set,
                                  val_set, space.embed(train_set.class_names, train_set.class_ids), progress=False)
    assert len(chosen["splits"]) == 3 and conse["gzsl_gamma"] == pytest.approx(chosen["gamma"])
    assert runs.read_calibration(softmax.folder) is None  # it belongs to the space, not to the softmax run


def test_class_splits_train_on_the_images_the_run_trained_on(held_out_runs, monkeypatch):
    from devise.training import calibration

    softmax, _ = held_out_runs
    train_set = runs.run_split(softmax.config, softmax.folder, "train", progress=False)
    val_set = runs.run_split(softmax.config, softmax.folder, progress=False)
    model, featured = devise_api.load(softmax.folder, device="cpu"), []

    def features_of(data):
        featured.append(len(data))
        return model.body_outputs(data, progress=False)

    trial = replace(softmax.config, train_limit=100)  # trained with --train-limit 100
    calibration.class_split_constant(trial, features_of, train_set, val_set, torch.randn(len(softmax.class_names), 8),
                                     progress=False)
    assert featured == [100, len(val_set)]  # its first 100 training images; the validation images, half then used
