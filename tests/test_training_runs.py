"""The run folder: the same from any directory, and older folders still used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import devise.training.loop as training
from devise.config import TrainConfig
from devise.errors import DeviseError
from devise.model import checkpoint
from devise.training import runs


def test_a_run_trained_with_relative_paths_is_used_from_any_directory(tmp_path):
    from PIL import Image

    from devise.data import load_dataset

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir()
    toy = load_dataset("toy", split="train", image_size=16)
    for name in toy.class_names[:6]:
        (work / "data" / name).mkdir(parents=True)
        for i, image in enumerate(toy.images[toy.labels == toy.class_names.index(name)][:10]):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(work / "data" / name / f"{i}.png")
    (work / "replacements.txt").write_text("red square\tcrimson square\n")
    devise = [sys.executable, "-m", "devise"]
    train = [*devise, "train", "--data", "folder", "--data-root", "data", "--replacements", "replacements.txt",
             "--cache-dir", "cache", "--unseen", "2", "--image-size", "16", "--crop-padding", "2", "--body", "cnn",
             "--width", "8", "--hidden", "16", "--batch-size", "16", "--epochs", "1", "--out", "run", "--quiet"]
    trained = subprocess.run(train, cwd=work, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr
    saved = checkpoint.load_config(work / "run")
    assert saved.data_root == str((work / "data").resolve()) and saved.cache_dir == str((work / "cache").resolve())
    assert saved.replacements == str((work / "replacements.txt").resolve()) and saved.out == "run"
    for command in (["zeroshot", str(work / "run"), "--target", "unseen", "--out", "zs", "--example-images", "0"],
                    ["evaluate", str(work / "run")],
                    ["train", "--resume", "--out", str(work / "run"), "--epochs", "2"]):
        done = subprocess.run([*devise, *command, "--quiet"], cwd=elsewhere, capture_output=True, text=True)
        assert done.returncode == 0, (command[0], done.stderr)
    assert json.loads((elsewhere / "zs" / "zeroshot.json").read_text())["target_classes"] == 2
    assert len(runs.read_metrics(work / "run")) == 2


def test_a_run_folder_written_with_relative_paths_still_resumes_from_where_it_was_trained(tmp_path, monkeypatch):
    from devise.config import with_absolute_paths

    monkeypatch.chdir(tmp_path)
    config = TrainConfig(data="toy", vectors="glove-text", vectors_path="vectors.txt", replacements="~/r.txt",
                         out="run")
    (tmp_path / "run").mkdir()
    runs.save_config(tmp_path / "run", config)  # as devise wrote it before paths were made absolute
    (tmp_path / "run" / runs.CHECKPOINT).write_bytes(b"")
    absolute = with_absolute_paths(config)
    assert absolute.vectors_path == str(tmp_path.resolve() / "vectors.txt") and absolute.out == "run"
    assert absolute.replacements == str(Path("~/r.txt").expanduser().resolve()) and absolute.data_root is None
    training.check_folder(tmp_path / "run", absolute, resume=True)
    with pytest.raises(DeviseError, match="--resume cannot change --vectors-path"):
        training.check_folder(tmp_path / "run", with_absolute_paths(TrainConfig(**{**config.to_dict(),
                                                                                   "vectors_path": "other.txt"})),
                              resume=True)
    assert with_absolute_paths(TrainConfig(vectors="minilm", prompts="default")).prompts == "default"
    assert with_absolute_paths(TrainConfig(vectors="minilm", prompts="hypernym")).prompts == "hypernym"
    prompts = with_absolute_paths(TrainConfig(vectors="minilm", prompts="p.txt")).prompts
    assert prompts == str(tmp_path.resolve() / "p.txt")


TINY = {"image_size": 16, "width": 8, "hidden": 32}


def test_a_checkpoint_killed_at_any_file_resumes_from_the_earlier_epoch_or_the_new_one(tmp_path, monkeypatch):
    import shutil

    import torch
    from conftest import Killed, kill_at, toy_settings

    def resume(folder):
        training.train(toy_settings(**TINY, epochs=2, out=str(folder)), resume=True, progress=False)

    earlier = tmp_path / "earlier"
    training.train(toy_settings(**TINY, epochs=1, out=str(earlier)), progress=False)
    later = shutil.copytree(earlier, tmp_path / "later")
    resume(later)
    weights = {1: checkpoint.load_checkpoint(earlier)["model"], 2: checkpoint.load_checkpoint(later)["model"]}
    for n in range(1, 7):  # config.toml, metrics.csv, checkpoint.pt, curves.png, summary.json; then done
        folder = shutil.copytree(earlier, tmp_path / f"killed-{n}")
        with monkeypatch.context() as patch:
            kill_at(patch, n)
            try:
                resume(folder)
                finished = True
            except Killed:
                finished = False
        state = checkpoint.load_checkpoint(folder)  # never half a checkpoint
        epoch = state["epoch"]
        assert epoch == (2 if n > 3 else 1), n
        assert all(torch.equal(state["model"][name], weights[epoch][name]) for name in weights[epoch])
        kept = [row for row in runs.read_metrics(folder) if row["epoch"] <= epoch]  # what a resume keeps
        assert [row["epoch"] for row in kept] == list(range(1, epoch + 1))
    assert finished


def test_a_run_folder_written_before_the_marker_is_still_devises_and_resumes(tmp_path):
    from conftest import toy_settings

    folder = tmp_path / "run"
    training.train(toy_settings(**TINY, epochs=1, out=str(folder)), progress=False)
    (folder / ".devise").unlink()  # as devise wrote run folders before they had a marker
    assert runs.foreign_files(folder) == [] and runs.is_run_folder(folder)
    training.train(toy_settings(**TINY, epochs=2, out=str(folder)), resume=True, progress=False)
    assert checkpoint.load_checkpoint(folder)["epoch"] == 2 and (folder / ".devise").is_file()
