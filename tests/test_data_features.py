"""A frozen body's features: computed once, read from the cache, rebuilt when damaged, never stale."""

from __future__ import annotations

import torch
from conftest import timm_toy_settings

import devise.training.loop as training
from devise.data import features as feature_cache
from devise.data import load_dataset
from devise.data.cache import cache_folder
from devise.model import checkpoint


def counting_computations(monkeypatch) -> list:
    calls = []
    real = feature_cache.compute_features

    def counted(*args, **kwargs):
        calls.append(kwargs["view"])
        return real(*args, **kwargs)

    monkeypatch.setattr(feature_cache, "compute_features", counted)
    return calls


def test_features_are_computed_once_then_read_from_the_cache(tmp_path, timm_weights, monkeypatch):
    run = training.train(timm_toy_settings(timm_weights, out=str(tmp_path / "run"), epochs=1, freeze_epochs=1), progress=False)
    data = load_dataset("toy", split="test")  # images the run has not computed features of
    calls = counting_computations(monkeypatch)
    first = feature_cache.cached_features(run.model.body, run.preprocess, data, views=("plain", "flip"), progress=False)
    again = feature_cache.cached_features(run.model.body, run.preprocess, data, views=("plain", "flip"), progress=False)
    assert calls == ["plain", "flip"]  # the second call computed nothing
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])  # a flipped image is another view


def test_a_damaged_feature_entry_is_computed_again(tmp_path, timm_weights, monkeypatch):
    run = training.train(timm_toy_settings(timm_weights, out=str(tmp_path / "run"), epochs=1, freeze_epochs=1), progress=False)
    data = load_dataset("toy", split="val")
    before = feature_cache.cached_features(run.model.body, run.preprocess, data, progress=False)[0].clone()
    key = feature_cache.feature_key(run.model.body, run.preprocess, "plain", data.images, bf16=False)
    entry = next(p for p in cache_folder(run.config.cache_dir).glob(f"features/*{key}"))
    array = entry / "features.npy"
    array.write_bytes(array.read_bytes()[:-64])  # cut short
    calls = counting_computations(monkeypatch)
    after = feature_cache.cached_features(run.model.body, run.preprocess, data, progress=False)[0]
    assert calls == ["plain"] and torch.equal(before, after)


def test_another_body_size_or_image_set_never_reads_a_cached_entry(tmp_path, timm_weights, monkeypatch):
    from dataclasses import replace

    run = training.train(timm_toy_settings(timm_weights, out=str(tmp_path / "run"), epochs=1, freeze_epochs=1), progress=False)
    data = load_dataset("toy", split="val")
    feature_cache.cached_features(run.model.body, run.preprocess, data, progress=False)
    calls = counting_computations(monkeypatch)
    other_body = checkpoint.load_run(run.folder).model.body
    torch.nn.init.zeros_(next(other_body.parameters()))
    feature_cache.cached_features(other_body, run.preprocess, data, progress=False)
    feature_cache.cached_features(run.model.body, replace(run.preprocess, size=24), data, progress=False)
    feature_cache.cached_features(run.model.body, run.preprocess, data.subset(torch.arange(100)), progress=False)
    assert calls == ["plain", "plain", "plain"]
