"""The batch pipeline: whole-batch augmentation, normalisation, reproducible order."""

from __future__ import annotations

import torch

from devise.data import load_dataset
from devise.data.pipeline import NO_AUGMENT, Augment, BatchLoader, augment_batch
from devise.data.preprocess import Preprocess


def toy():
    return load_dataset("toy", split="train")


def test_batches_have_the_right_shape_dtype_layout_and_range():
    data = toy()
    preprocess = Preprocess.fit(data.images)
    loader = BatchLoader(data, 64, preprocess, shuffle=True, augment=Augment(jitter=0.3), drop_last=True)
    batches = list(loader)
    assert len(batches) == len(data) // 64
    images, labels = batches[0]
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.float32
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert labels.dtype == torch.int64
    low = preprocess(torch.zeros(1, 3, 1, 1)).min()
    high = preprocess(torch.full((1, 3, 1, 1), 255.0)).max()
    assert low - 1e-4 <= images.min() and images.max() <= high + 1e-4
    assert abs(float(images.mean())) < 0.5


def test_same_seed_same_batches_other_epoch_other_batches():
    data = toy()
    preprocess = Preprocess.fit(data.images)

    def first_batch(seed, epoch):
        loader = BatchLoader(data, 32, preprocess, shuffle=True, augment=Augment(jitter=0.2), seed=seed)
        loader.set_epoch(epoch)
        return next(iter(loader))

    a, b = first_batch(0, 0), first_batch(0, 0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], first_batch(0, 1)[0])
    assert not torch.equal(a[0], first_batch(1, 0)[0])


def test_evaluation_batches_cover_every_image_once_in_order():
    data = toy()
    loader = BatchLoader(data, 300, Preprocess.fit(data.images), augment=NO_AUGMENT)
    labels = torch.cat([labels for _, labels in loader])
    assert torch.equal(labels, data.labels)


def test_crop_shifts_and_flip_mirrors_the_image():
    image = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    generator = torch.Generator().manual_seed(0)
    flipped = augment_batch(image.repeat(200, 1, 1, 1), Augment(crop_padding=0, flip=True), generator)
    kinds = {tuple(x[0, 0].tolist()) for x in flipped}
    assert kinds == {(0.0, 1.0, 2.0, 3.0), (3.0, 2.0, 1.0, 0.0)}
    cropped = augment_batch(image.repeat(200, 1, 1, 1), Augment(crop_padding=1, flip=False), generator)
    assert cropped.shape == (200, 3, 4, 4)
    centre = cropped[:, 0, 1:3, 1:3]  # every 1-pixel shift keeps a 2x2 block of the original
    assert {tuple(c.flatten().tolist()) for c in centre} <= {
        (float(r * 4 + c), float(r * 4 + c + 1), float(r * 4 + c + 4), float(r * 4 + c + 5))
        for r in range(3) for c in range(3)}
    assert len({tuple(c.flatten().tolist()) for c in centre}) > 1


def test_resizing_once_at_load():
    data = toy()
    small = data.resized(16)
    assert small.images.shape[-2:] == (16, 16) and small.images.dtype == torch.uint8
    assert torch.equal(small.labels, data.labels)


def test_the_shares_of_two_processes_put_together_are_the_one_process_batches():
    data = toy()
    preprocess = Preprocess.fit(data.images)

    def batches(shard):
        return list(BatchLoader(data, 64, preprocess, shuffle=True, augment=Augment(jitter=0.2), seed=1, shard=shard))

    whole, first, second = batches((0, 1)), batches((0, 2)), batches((1, 2))
    assert len(whole) == len(first) == len(second)
    for (images, labels), (a, a_labels), (b, b_labels) in zip(whole, first, second):
        assert len(a_labels) == len(b_labels) == len(labels) // 2
        assert torch.equal(torch.cat([a, b]), images) and torch.equal(torch.cat([a_labels, b_labels]), labels)


def test_a_limited_epoch_is_a_fresh_draw_of_that_many_images():
    data = toy()
    loader = BatchLoader(data, 100, Preprocess.fit(data.images), shuffle=True, limit=250)
    assert len(loader) == 3
    first = torch.cat([labels for _, labels in loader])
    loader.set_epoch(1)
    second = torch.cat([labels for _, labels in loader])
    assert len(first) == len(second) == 250 and not torch.equal(first, second)
