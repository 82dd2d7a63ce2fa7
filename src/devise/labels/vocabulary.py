"""Vocabularies: the candidate labels an image is ranked against, built in a run's label space."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from devise.errors import DeviseError, read_text_file
from devise.labels.run_labels import RunLabels
from devise.labels.wordnet import hop_vocabulary, is_wnid, load_wordnet


def vectors_or_zeros(space: RunLabels, labels: list[str], ids: list[str | None] | None = None) -> tuple[torch.Tensor, int]:
    """Unit vectors of the labels that have one in `space`, a zero row for each that has none, and
    how many had none: for a stock classifier's labels, which devise did not choose (ConSE's mean
    then leaves those out, and a ranking scores them 0)."""
    found = space.available(labels)
    vectors = torch.zeros(len(labels), space.dim)
    kept = [i for i, ok in enumerate(found) if ok]
    if kept:
        vectors[kept] = space.embed([labels[i] for i in kept], [ids[i] for i in kept] if ids else None)
    return vectors, found.count(False)


@dataclass
class Vocabulary:
    """Candidate labels and their unit vectors; `ids` their identifiers where they have one (the
    wnids of dataset classes and WordNet synsets, None for plain words); `sources` says what it was
    built from, and `missing` how many WordNet synsets were left out for want of a vector."""

    labels: list[str]
    vectors: torch.Tensor
    sources: str
    ids: list[str | None] | None = None
    missing: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def positions(self, labels: list[str], ids: list[str] | None = None) -> torch.Tensor:
        """For each label (by its id, when both sides have ids), its index here, or -1."""
        if ids is not None and self.ids is not None:
            where = {label_id: i for i, label_id in enumerate(self.ids) if label_id is not None}
            return torch.tensor([where.get(label_id, -1) for label_id in ids], dtype=torch.int64)
        where = {label: i for i, label in enumerate(self.labels)}
        return torch.tensor([where.get(label, -1) for label in labels], dtype=torch.int64)


WORDNET_HOPS = {"2hop": 2, "3hop": 3, "all": None}


def build_vocabulary(space: RunLabels, label_sets: dict[str, list[str]], spec: str = "target,train",
                     label_ids: dict[str, list[str]] | None = None) -> Vocabulary:
    """A vocabulary from a comma-separated spec, in order, without duplicates, in a run's space.

    Parts: a key of `label_sets` ("target", "train"), `words:N` (the N most frequent plain words of
    the vector source), `file:PATH` (one word or phrase per line), or `wordnet:2hop`,
    `wordnet:3hop`, `wordnet:all`: every WordNet noun within 2 (3) hops of a target class, or every
    one, leaving out the training classes (Frome et al.'s protocol; needs wnids in `label_ids`).
    """
    label_ids = label_ids or {}
    labels: list[str] = []
    ids: list[str | None] = []
    vectors: list[torch.Tensor] = []
    seen: set[str] = set()
    missing = 0

    def add(new_labels: list[str], new_vectors: torch.Tensor, new_ids: list[str] | None = None) -> None:
        for label, vector, label_id in zip(new_labels, new_vectors, new_ids or [None] * len(new_labels)):
            key = label_id or label
            if key not in seen:
                seen.add(key)
                labels.append(label)
                ids.append(label_id)
                vectors.append(vector)

    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        kind, _, value = part.partition(":")
        if kind in label_sets and not value:
            add(label_sets[kind], space.embed(label_sets[kind], label_ids.get(kind)), label_ids.get(kind))
        elif kind == "words":
            if not value.isdigit() or int(value) <= 0:
                raise DeviseError(f"vocabulary part {part!r}: use words:N with N a positive number")
            words = [w for w in space.vocabulary_words(int(value)) if w not in seen]
            add(words, space.embed_words(words))
        elif kind == "file":
            text = read_text_file(value, "vocabulary file")
            phrases = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
            add(phrases, space.embed(phrases))
        elif kind == "wordnet" and value in WORDNET_HOPS:
            wnids, names = wordnet_part(label_ids, WORDNET_HOPS[value], part)
            keep = space.available(names)
            missing += keep.count(False)
            kept = [i for i, ok in enumerate(keep) if ok]
            kept_ids = [wnids[i] for i in kept]
            add([names[i] for i in kept], space.embed([names[i] for i in kept], kept_ids), kept_ids)
        else:
            names = ", ".join([*label_sets, "words:N", "file:PATH", "wordnet:2hop|3hop|all"])
            raise DeviseError(f"unknown vocabulary part {part!r}; use a comma list of {names}")
    if not labels:
        raise DeviseError(f"vocabulary {spec!r} is empty")
    return Vocabulary(labels, torch.stack(vectors), spec, ids if any(i is not None for i in ids) else None, missing)


def wordnet_part(label_ids: dict[str, list[str]], hops: int | None, part: str) -> tuple[list[str], list[str]]:
    """(wnids, names) of a wordnet: vocabulary part. `wordnet:all` is every noun; `2hop` and `3hop`
    need a target whose classes are WordNet ids. The training classes are left out of it."""
    target = label_ids.get("target") or []
    if hops is not None and (not target or not all(is_wnid(t) for t in target)):
        raise DeviseError(f"vocabulary part {part!r} needs a target whose classes are WordNet ids "
                          "(Tiny ImageNet, or its held-out classes); wordnet:all needs none")
    wordnet = load_wordnet()
    wnids = hop_vocabulary(wordnet, target, hops, set(label_ids.get("train") or []))
    return wnids, [wordnet.names[w] for w in wnids]
