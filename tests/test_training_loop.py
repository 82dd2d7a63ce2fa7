"""The training loop on the toy set: it learns, it writes a run folder, it resumes exactly."""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from dataclasses import replace

import pytest
import torch

import devise.training.loop as training
from devise.config import TrainConfig, settings
from devise.errors import DeviseError, RunFailed
from devise.log import duration
from devise.model import checkpoint
from devise.training import runs


def test_a_run_folder_holds_config_metrics_checkpoint_curves_and_summary(tmp_path, toy_config):
    run = training.train(toy_config(), progress=False)
    files = {p.name for p in run.folder.iterdir()}
    assert {"config.toml", "metrics.csv", "checkpoint.pt", "curves.png", "summary.json"} <= files
    with open(run.folder / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert all(float(row["epoch_seconds"]) > 0 for row in rows)
    summary = json.loads((run.folder / "summary.json").read_text())
    assert summary["epochs"] == 2 and 0 <= summary["val_top1"] <= 1
    loaded = checkpoint.load_run(run.folder)
    assert loaded.class_names == run.class_names and loaded.config == run.config  # every setting, as used


def test_training_for_longer_learns_the_toy_set(tmp_path, toy_config):
    config = toy_config(body="cnn", width=16, hidden=64, epochs=6, batch_size=32, optimizer="adam",
                        lr=3e-3, crop_padding=2, bf16=False)
    run = training.train(config, progress=False)
    summary = json.loads((run.folder / "summary.json").read_text())
    assert summary["val_top1"] > 0.5, summary  # chance is 1/40


def test_resume_after_a_stop_matches_an_uninterrupted_run(tmp_path, monkeypatch, toy_config, caplog):
    full = training.train(toy_config(out=str(tmp_path / "full" / "run"), epochs=3), progress=False)

    real_evaluate = training.evaluate
    calls = []

    def evaluate_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user presses Ctrl-C during epoch 2
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate", evaluate_then_stop)
    with pytest.raises(KeyboardInterrupt):
        training.train(toy_config(out=str(tmp_path / "stopped" / "run"), epochs=3), progress=False)
    monkeypatch.setattr(training, "evaluate", real_evaluate)
    stopped_state = checkpoint.load_checkpoint(tmp_path / "stopped" / "run")
    assert stopped_state["epoch"] == 1

    caplog.set_level("INFO", logger="devise")
    resumed = training.train(toy_config(out=str(tmp_path / "stopped" / "run"), epochs=3), resume=True, progress=False)
    assert "resumed after epoch 1/3: 2 to go" in caplog.text
    full_state = checkpoint.load_checkpoint(full.folder)
    resumed_state = checkpoint.load_checkpoint(resumed.folder)
    assert resumed_state["epoch"] == 3
    for name, tensor in full_state["model"].items():
        assert torch.allclose(tensor.float(), resumed_state["model"][name].float(), atol=1e-5), name
    for full_param, resumed_param in zip(full_state["optimizer"]["state"].values(),
                                         resumed_state["optimizer"]["state"].values()):  # Adam's moments too
        assert all(torch.allclose(full_param[key].float(), resumed_param[key].float(), atol=1e-5) for key in full_param)
    with open(resumed.folder / "metrics.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2", "3"]


def folder_contents(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_resuming_a_checkpoint_whose_optimiser_does_not_fit_is_one_clear_error_and_changes_nothing(tmp_path, toy_config):
    run = training.train(toy_config(epochs=1), progress=False)
    state = checkpoint.load_checkpoint(run.folder)
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:1]  # an older layout
    runs.save_checkpoint(run.folder, state)
    before = folder_contents(run.folder)
    with pytest.raises(DeviseError, match="do not fit this run's settings or this version of devise"):
        training.train(toy_config(epochs=2, lr=0.01), resume=True, progress=False)
    assert folder_contents(run.folder) == before


def test_resume_refuses_a_changed_architecture_before_writing_anything(tmp_path, toy_config):
    run = training.train(toy_config(epochs=1), progress=False)
    before = folder_contents(run.folder)
    with pytest.raises(DeviseError, match="--resume cannot change --width"):
        training.train(toy_config(epochs=2, width=24), resume=True, progress=False)
    assert folder_contents(run.folder) == before


def test_a_new_run_refuses_a_folder_holding_someone_elses_files(tmp_path, toy_config):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(DeviseError, match=r"holds files devise did not write \(notes.txt\)"):
        training.train(toy_config(), progress=False)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["notes.txt"]


def test_another_process_taking_the_folder_meanwhile_is_not_someone_elses_file(tmp_path, monkeypatch):
    """Under torchrun, rank 0 may hold the folder (and write its lock file) while rank 1 checks it."""
    folder = tmp_path / "run"
    folder.mkdir()
    listdir = os.listdir

    def rank0_takes_the_folder(path):
        names = listdir(path)
        (folder / runs.HOLDER).write_text("devise train (pid 1)")
        return names

    monkeypatch.setattr(runs.os, "listdir", rank0_takes_the_folder)
    assert runs.foreign_files(folder) == []


def test_a_run_folder_has_one_writer_at_a_time(tmp_path, toy_config):
    with runs.held(tmp_path / "run", "train"):
        with pytest.raises(RunFailed, match=r"run is in use by devise train \(pid \d+"):
            training.train(toy_config(), progress=False)
    assert not (tmp_path / "run").exists(), "nothing left behind by the refused run, nor by the holder"


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tmp_path, toy_config):
    training.train(toy_config(epochs=1), progress=False)
    kept = folder_contents(tmp_path / "run")["checkpoint.pt"]
    with pytest.raises(RunFailed, match="training diverged in epoch 2.*the checkpoint of epoch 1 is kept"):
        training.train(toy_config(epochs=3, lr=1e12), resume=True, progress=False)
    assert folder_contents(tmp_path / "run")["checkpoint.pt"] == kept


def test_progressive_resizing_trains_the_first_epochs_on_small_images(tmp_path, monkeypatch, toy_config):
    sizes = []
    original = training.train_one_epoch

    def spy(model, loader, *args, **kwargs):
        sizes.append(next(iter(loader))[0].shape[-1])
        return original(model, loader, *args, **kwargs)

    monkeypatch.setattr(training, "train_one_epoch", spy)
    run = training.train(toy_config(epochs=3, small_epochs=2, small_size=16), progress=False)
    assert sizes == [16, 16, 32]
    assert run.model(torch.zeros(1, 3, 32, 32)).shape == (1, 40), "evaluation stays at the full size"


def test_progressive_resizing_needs_a_smaller_size(tmp_path, toy_config):
    with pytest.raises(DeviseError, match="--small-size"):
        training.train(toy_config(small_epochs=1, small_size=32), progress=False)


RANGES = {item.name: item.metadata["range"] for item in settings() if item.metadata["range"]}


@pytest.mark.parametrize("name", sorted(RANGES))
def test_every_setting_with_a_range_is_refused_just_outside_it_before_any_work(name, tmp_path, toy_config):
    low, high, low_ok, high_ok = RANGES[name]
    kind = type(getattr(TrainConfig(), name))
    step = 1 if kind is int else 1e-6
    wrong = (low - step if low_ok else low) if high is None or name in ("image_size", "width") else (
        high + step if high_ok else high)
    config = toy_config(**{name: kind(wrong)})
    with pytest.raises(DeviseError, match=f"--{name.replace('_', '-')} must be"):
        training.train(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_images_that_do_not_decode_can_be_left_out_and_are_listed(tmp_path, toy_config):
    from PIL import Image

    for c, name in enumerate(["red square", "blue circle"]):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (32, 32), (200 * c, 30 * i, 50)).save(tmp_path / "data" / name / f"{i}.png")
    (tmp_path / "data" / "red square" / "broken.png").write_text("not an image")
    config = toy_config(data="folder", data_root=str(tmp_path / "data"), batch_size=4, epochs=1)
    with pytest.raises(DeviseError, match="broken.png is not a readable image"):
        training.train(config, progress=False)
    training.train(replace(config, on_bad_image="skip"), progress=False)
    assert (tmp_path / "run" / "skipped-images.txt").read_text().strip().endswith("broken.png")


# ---------------------------------------------------------------------------------------------
# What a run says while it trains


def test_an_epoch_line_reads_as_figures_speed_time_and_time_left():
    row = {"epoch": 3, "train_loss": 2.3104, "train_top1": 0.52, "val_loss": 2.405, "val_top1": 0.412,
           "val_top5": 0.701, "images_per_second": 1234.4, "epoch_seconds": 12.34}
    assert training.epoch_line(row, 30, 340.2) == ("epoch 3/30  train loss 2.310 top-1 0.520  val loss 2.405 "
                                                   "top-1 0.412 top-5 0.701  1,234 img/s  12.3 s  ETA 5 min 40 s")
    assert training.epoch_line({**row, "epoch": 30, "epoch_seconds": 75}, 30, None).endswith("img/s  1 min 15 s")


def test_a_run_says_what_starts_then_each_epoch_with_the_time_left_at_its_mean_pace(toy_config, caplog):
    with caplog.at_level(logging.INFO, logger="devise"):
        run = training.train(toy_config(epochs=3), progress=False)
    said = [record.getMessage() for record in caplog.records if record.name == "devise.training.loop"]
    assert said[0].startswith("training a softmax model (cnn, 32 px) on toy: ") and "3 epochs" in said[0]
    assert "on cpu, float32; into " in said[0]
    epochs = [line for line in said if line.startswith("epoch ")]
    seconds = [row["epoch_seconds"] for row in runs.read_metrics(run.folder)]
    for done, line in enumerate(epochs[:2], start=1):
        assert line.endswith(f"  ETA {duration(sum(seconds[:done]) / done * (3 - done))}"), line
    assert epochs[2].split()[1] == "3/3" and "ETA" not in epochs[2]


def test_a_run_writes_its_epochs_as_tensorboard_scalars_when_asked(toy_config):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run = training.train(toy_config(log_to="tensorboard"), progress=False)
    events = accumulator.EventAccumulator(str(run.folder / runs.TENSORBOARD))
    events.Reload()
    assert {"loss/train", "loss/val", "top1/val", "top5/val", "lr", "images_per_second"} <= set(events.Tags()["scalars"])
    rows = runs.read_metrics(run.folder)
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("top1/val")] == [
        (int(row["epoch"]), round(row["val_top1"], 4)) for row in rows]


def test_tensorboard_without_its_package_is_one_line_before_anything_is_written(toy_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    config = toy_config(log_to="tensorboard")
    with pytest.raises(DeviseError, match=r'needs the tensorboard package: pip install "devise\[tensorboard\]"'):
        training.train(config, progress=False)
    assert not os.path.exists(config.out)


def test_a_new_run_refuses_a_folder_holding_only_the_users_own_config_toml_and_metrics_csv(tmp_path, capsys):
    from conftest import toy_flags

    from devise.cli import main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.toml").write_text("my = 'own settings'\n")
    (mine / "metrics.csv").write_text("my,own\n1,2\n")
    assert main(["train", *toy_flags(epochs=1), "--out", str(mine), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"devise: error: {mine} holds files devise did not write (config.toml, metrics.csv): choose another --out"]
    assert sorted(p.name for p in mine.iterdir()) == ["config.toml", "metrics.csv"]
    assert (mine / "config.toml").read_text() == "my = 'own settings'\n"
    (tmp_path / "a-file").write_text("mine")
    assert main(["train", *toy_flags(epochs=1), "--out", str(tmp_path / "a-file"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"devise: error: {tmp_path / 'a-file'} is a file, not a folder: give a folder of its own"]
    assert (tmp_path / "a-file").read_text() == "mine"


def test_the_time_left_counts_each_epoch_at_the_pace_of_its_kind(toy_config):
    config = toy_config(epochs=6, small_epochs=2, small_size=16)  # two fast small-image epochs, then four full ones
    assert training.seconds_left(config, {0: 1.0}, 0) == 1.0 + 1.0 * 4  # no full epoch timed yet: the pace so far
    assert training.seconds_left(config, {0: 1.0, 1: 1.0, 2: 4.0}, 2) == 3 * 4.0
    assert training.seconds_left(config, {0: 1.0, 1: 1.0, 2: 4.0, 3: 4.0, 4: 4.0, 5: 4.0}, 5) is None
