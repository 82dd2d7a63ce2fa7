"""Every dataset gives the same thing: uint8 N x 3 x H x W images, int64 labels, class names."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_cifar100
from devise.data import load_dataset, load_tiny_imagenet
from devise.errors import DeviseError


def assert_image_set(data, count, classes, size):
    assert data.images.shape == (count, 3, size, size)
    assert data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64 and data.labels.shape == (count,)
    assert len(data.class_names) == classes
    assert 0 <= int(data.labels.min()) and int(data.labels.max()) < classes


@pytest.mark.realdata
def test_real_tiny_imagenet_from_the_zip(tiny_imagenet_zip, tmp_path):
    train = load_tiny_imagenet(tiny_imagenet_zip, "train", cache_dir=tmp_path, progress=False)
    assert_image_set(train, 100_000, 200, 64)
    goldfish = train.class_ids.index("n01443537")
    assert train.class_names[goldfish] == "goldfish, Carassius auratus"
    assert torch.bincount(train.labels).tolist() == [500] * 200
    means = train.images[::10].float().mean(dim=(0, 2, 3))
    assert torch.allclose(means, torch.tensor([122.5, 114.3, 101.4]), atol=1.5)

    started = time.perf_counter()
    train_again = load_tiny_imagenet(tiny_imagenet_zip, "train", cache_dir=tmp_path, progress=False)
    val = load_tiny_imagenet(tiny_imagenet_zip, "val", cache_dir=tmp_path, progress=False)
    assert time.perf_counter() - started < 2.0, "a cached load must be fast"
    assert_image_set(val, 10_000, 200, 64)
    assert torch.bincount(val.labels).tolist() == [50] * 200
    assert torch.equal(train_again.images[:50], train.images[:50])


def write_tiny_imagenet_folder(root, wnids=("n01443537", "n02124075"), per_class=3, val=2):
    """A miniature tiny-imagenet-200 folder in the official layout (one greyscale image)."""
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn02124075\tEgyptian cat\n"
                                    "n99999999\tunused\n")
    rng = np.random.default_rng(0)
    for wnid in wnids:
        (base / "train" / wnid / "images").mkdir(parents=True)
        for k in range(per_class):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                base / "train" / wnid / "images" / f"{wnid}_{k}.JPEG")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), "L").save(base / "train" / wnids[0] / "images" / "grey.JPEG")
    lines = []
    for k in range(val):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(base / "val" / "images" / f"val_{k}.JPEG")
        lines.append(f"val_{k}.JPEG\t{wnids[k % len(wnids)]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def test_tiny_imagenet_layout_from_an_extracted_folder(tmp_path):
    base = write_tiny_imagenet_folder(tmp_path / "src")
    train = load_dataset("tiny-imagenet", tmp_path / "src", "train", cache_dir=tmp_path / "cache", progress=False)
    assert_image_set(train, 7, 2, 64)
    assert train.class_names == ["goldfish, Carassius auratus", "Egyptian cat"]
    val = load_dataset("tiny-imagenet", base, "val", image_size=32, cache_dir=tmp_path / "cache", progress=False)
    assert_image_set(val, 2, 2, 32)
    assert val.labels.tolist() == [0, 1]


def test_tiny_imagenet_cache_is_rebuilt_when_the_source_changes(tmp_path):
    base = write_tiny_imagenet_folder(tmp_path / "src")
    first = load_dataset("tiny-imagenet", base, "val", cache_dir=tmp_path / "cache", progress=False)
    lines = (base / "val" / "val_annotations.txt").read_text().splitlines()
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines[:1]) + "\n")
    second = load_dataset("tiny-imagenet", base, "val", cache_dir=tmp_path / "cache", progress=False)
    assert len(first) == 2 and len(second) == 1


def test_tiny_imagenet_resized_copies_are_cached_and_match_a_fresh_resize(tmp_path, monkeypatch):
    import devise.data.tiny_imagenet as tiny

    base = write_tiny_imagenet_folder(tmp_path / "src")
    full = load_dataset("tiny-imagenet", base, "train", cache_dir=tmp_path / "cache", progress=False)
    small = load_dataset("tiny-imagenet", base, "train", image_size=32, cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(small.images, full.resized(32).images)

    def no_resize(*args, **kwargs):
        raise AssertionError("the second load at 32 px should come from the cache")

    monkeypatch.setattr(tiny, "resize_uint8", no_resize)
    again = load_dataset("tiny-imagenet", base, "train", image_size=32, cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(again.images, small.images)


def test_cifar100_from_the_official_pickle_format(tmp_path):
    write_cifar100(tmp_path, {"train": 30, "test": 12})
    test = load_dataset("cifar100", tmp_path, "test")
    assert_image_set(test, 12, 100, 32)
    assert test.class_names[-3:] == ["aquarium_fish", "maple_tree", "lawn_mower"]
    with open(tmp_path / "cifar-100-python" / "test", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    assert torch.equal(test.images[3].flatten(), torch.from_numpy(raw[b"data"][3]))
    assert load_dataset("cifar100", tmp_path, "train", image_size=64).images.shape == (30, 3, 64, 64)


def test_cifar100_refuses_a_pickle_that_would_run_code(tmp_path):
    write_cifar100(tmp_path, {"test": 2})

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-100-python" / "test", "wb") as handle:
        pickle.dump({b"data": Evil()}, handle)
    with pytest.raises(DeviseError, match="not a CIFAR-100 pickle"):
        load_dataset("cifar100", tmp_path, "test")


def test_image_folder_with_png_jpg_greyscale_rgba_and_odd_sizes(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "tiger").mkdir()
    (tmp_path / "shark").mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 90, 3), dtype=np.uint8)).save(tmp_path / "tiger" / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (100, 100), dtype=np.uint8), "L").save(tmp_path / "tiger" / "b.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA").save(tmp_path / "shark" / "c.png")
    (tmp_path / "shark" / ".DS_Store").write_bytes(b"\0junk")
    data = load_dataset("folder", tmp_path, image_size=48, progress=False)
    assert_image_set(data, 3, 2, 48)
    assert data.class_names == ["shark", "tiger"]
    assert data.labels.tolist() == [0, 1, 1]
    grey = data.images[2]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_image_folder_names_a_file_that_is_not_an_image(tmp_path):
    (tmp_path / "cat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / "ok.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DeviseError, match="notes.txt is not a readable image"):
        load_dataset("folder", tmp_path, progress=False)


def test_toy_set_has_word_labels_and_is_reproducible():
    train = load_dataset("toy", split="train")
    assert "red square" in train.class_names and "blue circle" in train.class_names
    assert_image_set(train, 40 * 40, 40, 32)
    assert torch.equal(train.images, load_dataset("toy", split="train").images)
    assert not torch.equal(train.images[:100], load_dataset("toy", split="val").images[:100])


def test_unknown_dataset_name_is_a_clear_error():
    with pytest.raises(DeviseError, match="unknown dataset 'imagenet-21k'"):
        load_dataset("imagenet-21k")
