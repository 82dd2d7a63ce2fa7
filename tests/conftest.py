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


# A tiny softmax run and a DeViSE run warm-started from it, on the toy set at 16 px: about ten
# seconds on two cores, shared by the tests of exported models and of `devise serve`.
TINY_TOY = dict(data="toy", image_size=16, body="cnn", width=8, hidden=32, dropout=0.1, batch_size=32,
                optimizer="adam", lr=3e-3, crop_padding=2, bf16=False, epochs=2)


@pytest.fixture(scope="session")
def toy_runs(tmp_path_factory) -> dict[str, Path]:
    from devise.config import TrainConfig
    from devise.training.loop import train

    root = tmp_path_factory.mktemp("toy-runs")
    train(TrainConfig(**TINY_TOY, out=str(root / "softmax")), progress=False)
    train(TrainConfig(**TINY_TOY, head="embedding", loss="rank", init=str(root / "softmax"), out=str(root / "devise")),
          progress=False)
    return {"softmax": root / "softmax", "devise": root / "devise"}
