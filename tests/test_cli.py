"""The command line: help for every subcommand, and one clear line for every user mistake."""

from __future__ import annotations

import subprocess
import sys

import pytest


def devise(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "devise", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("command", ["train", "curves", "data", "evaluate", "zeroshot", "predict", "report",
                                     "reproduce", "demo", "vectors"])
def test_every_subcommand_has_help(command):
    result = devise(command, "--help")
    assert result.returncode == 0 and "usage: devise" in result.stdout


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_path(tmp_path):
    assert_one_line_error(devise("data", "--data-root", str(tmp_path / "nowhere.zip")), "no such file or folder")


def test_corrupt_zip(tmp_path):
    broken = tmp_path / "tiny-imagenet-200.zip"
    broken.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    assert_one_line_error(devise("data", "--data-root", str(broken), "--cache-dir", str(tmp_path)),
                          "not a readable zip archive")


def test_file_that_is_not_an_image_in_an_image_folder(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "cat.jpg").write_text("plain text pretending to be a JPEG")
    assert_one_line_error(devise("data", "--data", "folder", "--data-root", str(tmp_path), "--splits", "all"),
                          "cat.jpg is not a readable image")


def test_unknown_dataset_name():
    assert_one_line_error(devise("data", "--data", "mnist"), "unknown dataset 'mnist'")


def test_unknown_option_value_and_bad_config_file(tmp_path):
    assert_one_line_error(devise("train", "--data", "toy", "--optimizer", "lbfgs", "--out", str(tmp_path / "r")),
                          "argument --optimizer: invalid choice: 'lbfgs'")
    config = tmp_path / "bad.toml"
    config.write_text("epochs = 3\nlearning_rate_typo = 0.1\n")
    assert_one_line_error(devise("train", "--config", str(config)), "unknown setting(s) learning_rate_typo")


def test_resume_without_a_run(tmp_path):
    assert_one_line_error(devise("train", "--resume", "--out", str(tmp_path / "none")), "cannot resume")


def test_train_from_a_toml_file_then_overlay_curves(tmp_path):
    config = tmp_path / "toy.toml"
    config.write_text('data = "toy"\nwidth = 8\nhidden = 16\nepochs = 1\nbatch_size = 128\n')
    for name in ("a", "b"):
        result = devise("train", "--config", str(config), "--out", str(tmp_path / name), "--quiet")
        assert result.returncode == 0, result.stderr
    assert 'width = 8' in (tmp_path / "a" / "config.toml").read_text()
    result = devise("curves", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "both.png"))
    assert result.returncode == 0 and (tmp_path / "both.png").stat().st_size > 1000
