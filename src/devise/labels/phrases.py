"""Encoded phrases kept on disk: a vocabulary of 20,000 words or every WordNet noun costs a sentence
encoder its time once."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from devise.data.cache import default_cache_dir
from devise.log import ProgressCount

ENCODE_CHUNK = 8192  # phrases encoded and cached at a time
ENCODE_BATCH = 64  # phrases an encoder call: progress moves every few seconds even on two cores
ANNOUNCE_FROM = 100  # fewer new phrases than this take a second or two: no line about them
log = logging.getLogger(__name__)


class PhraseCache:
    """Unit vectors of encoded phrases on disk, one folder per model and template set, under the
    devise cache (`$DEVISE_CACHE` or ~/.cache/devise). Each batch of new phrases is one more
    `.npz` shard written whole and renamed into place: a reader never sees half a file, and two
    processes adding at once lose nothing but a little work."""

    def __init__(self, model_key: str, templates: tuple[str, ...]):

        template_key = hashlib.sha1("\n".join(templates).encode()).hexdigest()[:8] if templates else "bare"
        self.folder = default_cache_dir() / "phrases" / f"{model_key}-{template_key}"
        self.vectors: dict[str, torch.Tensor] | None = None

    def load(self) -> dict[str, torch.Tensor]:
        if self.vectors is None:
            self.vectors = {}
            for shard in sorted(self.folder.glob("*.npz")):
                try:
                    with np.load(shard, allow_pickle=False) as data:
                        rows = torch.from_numpy(data["vectors"].astype(np.float32))
                        self.vectors.update(zip(data["phrases"].tolist(), rows))
                except (OSError, ValueError, KeyError):
                    continue  # a damaged shard: its phrases are encoded again
        return self.vectors

    def lookup(self, phrases: list[str]) -> dict[str, torch.Tensor]:
        cached = self.load()
        return {p: cached[p] for p in phrases if p in cached}

    def add(self, phrases: list[str], vectors: torch.Tensor) -> dict[str, torch.Tensor]:
        new = dict(zip(phrases, vectors))
        self.load().update(new)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha1("\n".join(phrases).encode()).hexdigest()[:16]
            tmp = self.folder / f".{digest}.{os.getpid()}.tmp.npz"
            np.savez(tmp, phrases=np.array(phrases, dtype=str), vectors=vectors.numpy())
            os.replace(tmp, self.folder / f"{digest}.npz")
        except OSError:
            pass  # a read-only cache costs time, never a result
        return new


def encode_and_cache(cache: PhraseCache, keys: list[str], items: Sequence, encode: Callable[[list], torch.Tensor], *,
                     encoder: str) -> dict[str, torch.Tensor]:
    """`encode(items)`'s unit rows, keyed by `keys`, each `ENCODE_CHUNK` cached when done, so that a
    stopped encoding resumes. A long one (20,000 words in prompts is a hundred thousand sentences)
    first says at once what it encodes, how many and where it keeps them, then shows its progress
    and the time left."""
    if not items:
        return {}
    if len(items) >= ANNOUNCE_FROM:
        log.info(f"encoding {len(items):,} label phrases with {encoder} once (cached in {cache.folder})")
    found: dict[str, torch.Tensor] = {}
    progress = ProgressCount(len(items), "encoding label phrases", "phrase", enabled=len(items) >= ANNOUNCE_FROM)
    try:
        for start in range(0, len(items), ENCODE_CHUNK):
            end = min(start + ENCODE_CHUNK, len(items))
            rows = []
            for first in range(start, end, ENCODE_BATCH):
                batch = list(items[first : min(first + ENCODE_BATCH, end)])
                rows.append(encode(batch))
                progress.update(len(batch))
            found.update(cache.add(keys[start:end], torch.cat(rows)))
    finally:
        progress.close()
    return found
