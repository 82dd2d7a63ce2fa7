"""Shared fixtures: the real Tiny ImageNet when present, small files written in real formats."""

from __future__ import annotations

import os

# Toy-sized models gain nothing from a second thread, and a second thread fighting another process
# for two cores slows everything down: one thread here and in every `devise` subprocess.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pickle
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_IMAGENET = Path(os.environ.get("DEVISE_TINY_IMAGENET", REPO.parent / "shared" / "data" / "tiny-imagenet-200.zip"))


@pytest.fixture(scope="session")
def tiny_imagenet_zip() -> Path:
    if not TINY_IMAGENET.exists():
        pytest.skip(f"real Tiny ImageNet not found at {TINY_IMAGENET} (set DEVISE_TINY_IMAGENET)")
    return TINY_IMAGENET


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Keep every test's dataset cache out of the user's ~/.cache."""
    monkeypatch.setenv("DEVISE_CACHE", str(tmp_path_factory.getbasetemp() / "devise-cache"))


def write_cifar100(root: Path, per_split: dict[str, int], seed: int = 0, names: list[str] | None = None) -> Path:
    """A CIFAR-100 folder in the official pickle layout (bytes keys, uint8 rows of 3072)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    names = [n.encode() for n in names] if names else (
        [f"class_{i}".encode() for i in range(97)] + [b"aquarium_fish", b"maple_tree", b"lawn_mower"])
    with open(folder / "meta", "wb") as handle:
        pickle.dump({b"fine_label_names": names, b"coarse_label_names": [b"x"] * 20}, handle, protocol=2)
    for split, count in per_split.items():
        batch = {b"filenames": [b"img.png"] * count, b"batch_label": split.encode(),
                 b"fine_labels": rng.integers(0, len(names), count).tolist(),
                 b"coarse_labels": rng.integers(0, 20, count).tolist(),
                 b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8)}
        with open(folder / split, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    return root


# The one toy run of the tests: a small plain CNN on the generated toy set (40 classes, 32 px), in
# float32 everywhere so that a figure does not depend on the host. Tests lay their own settings over it.
TOY = dict(data="toy", image_size=32, body="cnn", width=16, hidden=64, dropout=0.1, batch_size=32, epochs=2,
           optimizer="adam", lr=3e-3, crop_padding=2, bf16=False)


def toy_settings(**overrides):
    """The toy run's settings with `overrides` laid over them."""
    from devise.config import TrainConfig

    return TrainConfig(**{**TOY, **overrides})


def toy_flags(**overrides) -> list[str]:
    """The toy run's settings as the command line takes them (`--batch-size 32`, `--no-bf16`)."""
    flags = []
    for name, value in {**TOY, **overrides}.items():
        flag = name.replace("_", "-")
        flags += ([f"--{flag}" if value else f"--no-{flag}"] if isinstance(value, bool) else [f"--{flag}", str(value)])
    return flags


@pytest.fixture
def toy_config(tmp_path):
    """`toy_config(**overrides)`: the toy run's settings, writing into this test's folder."""
    return lambda **overrides: toy_settings(**{"out": str(tmp_path / "run"), **overrides})


# A tiny softmax run and a DeViSE run warm-started from it, at 16 px: about ten seconds on two
# cores, shared by the tests of exported models and of `devise serve`.
@pytest.fixture(scope="session")
def toy_runs(tmp_path_factory) -> dict[str, Path]:
    from devise.training.loop import train

    root = tmp_path_factory.mktemp("toy-runs")
    tiny = dict(image_size=16, width=8, hidden=32)
    train(toy_settings(**tiny, out=str(root / "softmax")), progress=False)
    train(toy_settings(**tiny, head="embedding", loss="rank", init=str(root / "softmax"), out=str(root / "devise")),
          progress=False)
    return {"softmax": root / "softmax", "devise": root / "devise"}


HELD_OUT = dict(unseen=8, unseen_seed=3)  # 8 of the toy set's 40 classes held out of training


@pytest.fixture(scope="session")
def held_out_runs(tmp_path_factory):
    """A softmax run and a DeViSE run on it, with `HELD_OUT` classes held out: the tests of zero-shot
    and of calibration share them."""
    from devise.training.loop import train

    folder = tmp_path_factory.mktemp("zsl")
    softmax = train(toy_settings(**HELD_OUT, epochs=4, out=str(folder / "softmax")), progress=False)
    devise = train(toy_settings(**HELD_OUT, head="embedding", loss="rank", epochs=3, init=str(softmax.folder),
                                out=str(folder / "devise")), progress=False)
    return softmax, devise


def timm_toy_settings(weights, **overrides):
    """The toy run on timm's tiny test network, started from a local weights file."""
    return toy_settings(**{"body": "timm:test_efficientnet", "pretrained": True, "pretrained_file": str(weights),
                           "batch_size": 64, "epochs": 3, **overrides})


@pytest.fixture(scope="session")
def timm_weights(tmp_path_factory):
    """A weights file for timm's tiny test network, as a user would hand devise one: loaded through
    timm's own `pretrained_cfg_overlay={"file": ...}`, no hub needed."""
    import timm
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "test_efficientnet.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), path)
    return path


# Killing a writer at a file boundary, a small disk and a read-only folder: the tests of writing
# all or nothing (`devise.files`).
class Killed(BaseException):
    """The process killed at that moment: nothing of devise's catches it."""


def kill_at(monkeypatch, n: int) -> None:
    """Kill the process (raise `Killed`) as devise is about to put its n-th file or folder in place
    (`devise.files.place`, the one step at which a reader goes from old to new)."""
    from devise import files

    real, count = files.place, [0]

    def place(source, target):
        count[0] += 1
        if count[0] == n:
            raise Killed(f"killed before putting {target} in place")
        real(source, target)

    monkeypatch.setattr(files, "place", place)


def mount_tmpfs(folder: Path, size: str = "2m") -> None:
    """Mount a tmpfs of `size` on `folder`, or skip the test where this machine does not let it."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           check=False, capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB file system of its own (a tmpfs), unmounted after the test."""
    import subprocess

    disk = tmp_path / "disk"
    mount_tmpfs(disk)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


@pytest.fixture
def read_only(tmp_path):
    """`read_only(folder)`: the folder and all it holds read-only for the rest of the test, by its
    mode for a user, by a tmpfs remounted read-only for root (whom modes do not stop)."""
    import shutil
    import subprocess

    mounted, chmodded = [], []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            for path in [folder, *folder.rglob("*")]:
                if path.is_dir():
                    path.chmod(0o555)
                    chmodded.append(path)
            return folder
        staged = folder.with_name(folder.name + "-staged")
        folder.rename(staged)
        mount_tmpfs(folder, "64m")
        mounted.append(folder)
        shutil.copytree(staged, folder, dirs_exist_ok=True)
        shutil.rmtree(staged)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
        return folder

    yield make
    for path in chmodded:
        path.chmod(0o755)
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)
