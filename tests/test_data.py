"""Every dataset gives the same thing: uint8 N x 3 x H x W images, int64 labels, class names."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_cifar100
from PIL import Image

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

    import devise.data.tiny_imagenet as tiny

    real_decode = tiny.decode_all
    tiny.decode_all = lambda *args, **kwargs: pytest.fail("a cached load decoded the images again")
    try:
        train_again = load_tiny_imagenet(tiny_imagenet_zip, "train", cache_dir=tmp_path, progress=False)
        val = load_tiny_imagenet(tiny_imagenet_zip, "val", cache_dir=tmp_path, progress=False)
    finally:
        tiny.decode_all = real_decode
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
    data = load_dataset("folder", tmp_path, "all", image_size=48, progress=False)
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
    skipped = load_dataset("folder", tmp_path, "all", progress=False, on_bad_image="skip")
    assert len(skipped) == 1 and [Path(name).name for name in skipped.skipped] == ["notes.txt"]


def write_classes(root, names, per_class=10):
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (c * 20, i * 20, 0)).save(root / name / f"{i}.png")


def test_a_folder_without_val_is_validated_on_a_seeded_share_of_its_images_not_on_its_training_ones(tmp_path):
    write_classes(tmp_path, ["cat", "dog", "train", "val"])  # "train" and "val" are classes here
    train = load_dataset("folder", tmp_path, "train", image_size=8, progress=False)
    val = load_dataset("folder", tmp_path, "val", image_size=8, progress=False)
    assert train.class_names == val.class_names == ["cat", "dog", "train", "val"]
    assert len(train) == 36 and len(val) == 4 and val.labels.tolist() == [0, 1, 2, 3]
    every = {(int(y), bytes(x.flatten().tolist())) for x, y in zip(torch.cat([train.images, val.images]),
                                                                 torch.cat([train.labels, val.labels]))}
    assert len(every) == 40, "the two splits together are every image, once"
    assert torch.equal(val.images, load_dataset("folder", tmp_path, "val", image_size=8, progress=False).images)


def test_a_split_folder_uses_its_val_or_holds_out_part_of_train(tmp_path):
    write_classes(tmp_path / "train", ["cat", "dog"])
    assert len(load_dataset("folder", tmp_path, "val", image_size=8, progress=False)) == 2
    write_classes(tmp_path / "val", ["cat", "dog"], per_class=3)
    assert len(load_dataset("folder", tmp_path, "val", image_size=8, progress=False)) == 6
    assert len(load_dataset("folder", tmp_path, "train", image_size=8, progress=False)) == 20


@pytest.fixture
def decodes(monkeypatch):
    """The number of times the image folder reader decoded its images."""
    import devise.data.folder as folder

    calls = []
    real = folder.decode_many
    monkeypatch.setattr(folder, "decode_many", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    return calls


def test_a_decoded_image_folder_is_cached_and_a_changed_or_added_file_makes_a_new_entry(tmp_path, decodes):
    import os

    root, cache = tmp_path / "data", tmp_path / "cache"
    write_classes(root, ["cat", "dog"], per_class=5)
    first = load_dataset("folder", root, "all", image_size=8, cache_dir=cache, progress=False)
    again = load_dataset("folder", root, "all", image_size=8, cache_dir=cache, progress=False)
    assert len(decodes) == 1, "the second load reads the cache"
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert again.class_names == first.class_names == ["cat", "dog"] and again.name == first.name
    train = load_dataset("folder", root, "train", image_size=8, cache_dir=cache, progress=False)
    val = load_dataset("folder", root, "val", image_size=8, cache_dir=cache, progress=False)
    assert len(decodes) == 1 and len(train) == 8 and len(val) == 2, "the splits come from the same entry"
    assert [p.name.startswith("folder-data-8px-") for p in cache.iterdir()] == [True]

    changed = root / "dog" / "3.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    fresh = load_dataset("folder", root, "all", image_size=8, cache_dir=cache, progress=False)
    assert len(decodes) == 2 and fresh.images[8, :, 0, 0].tolist() == [1, 2, 3]
    assert len(list(cache.iterdir())) == 1, "the entry of the earlier contents is removed"
    Image.new("RGB", (8, 8)).save(root / "cat" / "new.png")
    assert len(load_dataset("folder", root, "all", image_size=8, cache_dir=cache, progress=False)) == 11
    load_dataset("folder", root, "all", image_size=16, cache_dir=cache, progress=False)
    assert len(decodes) == 4, "an added file, and another size, each decode again"


def test_a_cached_image_folder_keeps_its_skipped_images_and_uses_the_default_cache(tmp_path, decodes, monkeypatch):
    monkeypatch.setenv("DEVISE_CACHE", str(tmp_path / "default"))
    write_classes(tmp_path / "data", ["cat", "dog"], per_class=2)
    (tmp_path / "data" / "cat" / "notes.txt").write_text("not an image")
    first = load_dataset("folder", tmp_path / "data", "all", image_size=8, progress=False, on_bad_image="skip")
    again = load_dataset("folder", tmp_path / "data", "all", image_size=8, progress=False, on_bad_image="skip")
    assert len(decodes) == 1 and len(again) == 4 and torch.equal(again.images, first.images)
    assert [Path(name).name for name in again.skipped] == ["notes.txt"] and again.skipped == first.skipped
    assert any((tmp_path / "default").glob("folder-data-8px-*/manifest.json"))
    with pytest.raises(DeviseError, match="notes.txt is not a readable image"):
        load_dataset("folder", tmp_path / "data", "all", image_size=8, progress=False)


def test_a_folders_class_names_are_read_without_decoding_an_image(tmp_path, monkeypatch):
    import devise.data.folder as folder

    write_classes(tmp_path / "plain", ["cat", "dog", "train"], per_class=2)
    write_classes(tmp_path / "split" / "train", ["cat", "dog"], per_class=2)
    (tmp_path / "plain" / ".hidden").mkdir()
    plain, split = ["cat", "dog", "train"], ["cat", "dog"]
    expected = {(tmp_path / "plain", None): plain, (tmp_path / "plain", "val"): plain,
                (tmp_path / "split", "val"): split, (tmp_path / "split", "train"): split}
    loaded = {key: load_dataset("folder", key[0], key[1] or "all", image_size=8, progress=False).class_names
              for key in expected}
    monkeypatch.setattr(folder, "decode_many", lambda *args, **kwargs: pytest.fail("an image was decoded"))
    assert {key: folder.folder_class_names(*key) for key in expected} == loaded == expected
    with pytest.raises(DeviseError, match="no such folder"):
        folder.folder_class_names(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# Every image mode, read faithfully


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(shape, high):
    return np.linspace(0, high, int(np.prod(shape))).reshape(shape)


MODES = {  # name: (encoded image, the mean its 8-bit RGB must have)
    "16-bit greyscale": lambda: (encoded(Image.fromarray(gradient((32, 32), 60000).astype(np.uint16)), "PNG"),
                                 30000 / 257),
    "32-bit float": lambda: (encoded(Image.fromarray(gradient((32, 32), 0.8).astype(np.float32)), "TIFF"), 0.4 * 255),
    "palette with transparency": lambda: (encoded(Image.fromarray(gradient((32, 32), 200).astype(np.uint8)).convert("P"),
                                                  "PNG", transparency=0), 100),
    "CMYK": lambda: (encoded(Image.new("CMYK", (16, 16), (0, 0, 0, 64)), "TIFF"), 255 - 64),
    "greyscale with alpha": lambda: (encoded(Image.new("LA", (16, 16), (90, 10)), "PNG"), 90),
    "1-bit": lambda: (encoded(Image.fromarray(np.tile([True, False], (16, 8))), "PNG"), 127.5),
    "greyscale": lambda: (encoded(Image.new("L", (16, 16), 77), "PNG"), 77),
    "RGBA": lambda: (encoded(Image.new("RGBA", (16, 16), (30, 60, 90, 0)), "PNG"), 60),
}


@pytest.mark.parametrize("mode", MODES)
def test_every_image_mode_decodes_to_the_right_8_bit_rgb(mode):
    from devise.data.sources import decode_image

    data, mean = MODES[mode]()
    decoded = decode_image(data, None, mode)
    assert decoded.dtype == np.uint8 and decoded.shape[2] == 3
    assert decoded.mean() == pytest.approx(mean, abs=1.0), mode


def test_an_image_too_large_is_refused_from_its_header_before_decoding(monkeypatch):
    from devise.data import sources

    bomb = encoded(Image.new("1", (8000, 8000)), "PNG")  # 64 megapixels in a few kilobytes
    strip = encoded(Image.new("1", (41_000_000, 1)), "PNG")  # a strip one pixel high: 41 megapixels
    assert len(bomb) < 100_000 and len(strip) < 100_000 and 8000 * 8000 > sources.MAX_PIXELS
    monkeypatch.setattr(sources, "eight_bit", lambda image: pytest.fail("the pixels were decoded"))
    with pytest.raises(sources.ImageTooLarge, match="8000 x 8000 pixels, above devise's limit of 40 megapixels"):
        sources.decode_image(bomb, 64, "bomb.png")  # refused from its header
    with pytest.raises(sources.ImageTooLarge, match="41000000 x 1 pixels, above devise's limit of 40 megapixels"):
        sources.decode_image(strip, 64, "strip.png")


def test_a_strip_of_39_megapixels_one_pixel_high_decodes_without_a_giant_intermediate(monkeypatch):
    from devise.data.sources import MAX_RESIZED_PIXELS, decode_image

    row = np.repeat(np.array([10, 200, 60], dtype=np.uint8), 13_000_000)  # three bands; the centre one is 200
    strip = encoded(Image.fromarray(row[None, :], "L"), "PNG")
    sizes = []
    real_resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda image, size, *args, **kwargs: (
        sizes.append(size), real_resize(image, size, *args, **kwargs))[1])
    decoded = decode_image(strip, 224, "strip.png")
    assert decoded.shape == (224, 224, 3) and (decoded == 200).all(), "the centre square of the strip"
    assert sizes and all(width * height <= MAX_RESIZED_PIXELS for width, height in sizes), sizes


def test_a_strip_cut_before_resizing_matches_the_two_step_resize_within_rounding(monkeypatch):
    from devise.data import sources

    y, x = np.mgrid[0:24, 0:6000]
    smooth = (127 + 60 * np.sin(x / 37.0) + 50 * np.cos(y / 5.0 + x / 410.0)).astype(np.uint8)
    for image in (Image.fromarray(smooth).convert("RGB"), Image.fromarray(smooth.T.copy()).convert("RGB")):
        for size, interpolation in ((16, "bilinear"), (64, "bicubic"), (224, "bilinear")):
            monkeypatch.setattr(sources, "MAX_RESIZED_PIXELS", 10**12)
            two_step = np.asarray(sources.square_resize(image, size, interpolation), dtype=int)
            monkeypatch.setattr(sources, "MAX_RESIZED_PIXELS", 0)
            cut_first = np.asarray(sources.square_resize(image, size, interpolation), dtype=int)
            assert np.abs(two_step - cut_first).max() <= 2, (image.size, size, interpolation)


@pytest.mark.parametrize("mode", ["16-bit greyscale", "32-bit float"])
def test_a_deep_image_decodes_exactly_as_its_whole_float_conversion_would(mode):
    from devise.data.sources import BLOCK_PIXELS, decode_image, square_resize

    rng = np.random.default_rng(0)
    side = int(BLOCK_PIXELS ** 0.5) + 90  # more than one block of pixels
    if mode == "16-bit greyscale":
        values = rng.integers(0, 65536, (side, side + 7)).astype(np.uint16)
        data, expected = encoded(Image.fromarray(values), "PNG"), values / 257
    else:
        values = (rng.random((side, side + 7)) * 300).astype(np.float32)  # past 1: taken as 0-255
        data, expected = encoded(Image.fromarray(values), "TIFF"), values.astype(np.float64)
    grey = Image.fromarray(np.clip(np.rint(expected), 0, 255).astype(np.uint8), "L").convert("RGB")
    assert np.array_equal(decode_image(data, None, mode), np.asarray(grey))
    assert np.array_equal(decode_image(data, 64, mode), np.asarray(square_resize(grey, 64))), \
        "resized in one channel, the same pixels as resized in three"


def test_toy_set_has_word_labels_and_is_reproducible():
    train = load_dataset("toy", split="train")
    assert "red square" in train.class_names and "blue circle" in train.class_names
    assert_image_set(train, 40 * 40, 40, 32)
    assert torch.equal(train.images, load_dataset("toy", split="train").images)
    assert not torch.equal(train.images[:100], load_dataset("toy", split="val").images[:100])


def test_unknown_dataset_name_is_a_clear_error():
    with pytest.raises(DeviseError, match="unknown dataset 'imagenet-21k'"):
        load_dataset("imagenet-21k")
