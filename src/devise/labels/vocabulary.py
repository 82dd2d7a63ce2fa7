"""Vocabularies: the candidate labels an image is ranked against, built in a run's label space."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

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


COUNT = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses


def label_key(label: str) -> str:
    """A label as vocabularies compare it: case, spacing and underscores folded, synonyms split at
    their commas ("Lion,King_of  beasts" is "lion, king of beasts")."""
    synonyms = (" ".join(synonym.replace("_", " ").split()) for synonym in label.split(","))
    return ", ".join(synonym for synonym in synonyms if synonym).casefold()


def unique_labels(labels: Iterable[str]) -> list[str]:
    """`labels` as a set: without repeats as `label_key` compares them, each at its first place
    and in its first spelling. Every list of candidates goes through here or `build_vocabulary`."""
    first: dict[str, str] = {}
    for label in labels:
        first.setdefault(label_key(label), label)
    return list(first.values())


@dataclass
class TakenLabels:
    """The candidates a vocabulary holds so far, compared by id when both have one (two WordNet
    senses of one name, "crane" the bird and the machine, are two nouns with two places in the
    hierarchy) and by `label_key` otherwise: the word "torch" repeats the class "torch" (n04456115)."""

    ids: set[str] = field(default_factory=set)
    keys: dict[str, bool] = field(default_factory=dict)  # label_key -> whether a label without an id has it

    def take(self, label: str, label_id: str | None) -> bool:
        """Whether `label` is new here; if so it is taken."""
        key = label_key(label)
        if label_id in self.ids or (key in self.keys and (label_id is None or self.keys[key])):
            return False
        if label_id is not None:
            self.ids.add(label_id)
        self.keys[key] = self.keys.get(key, False) or label_id is None
        return True


def build_vocabulary(space: RunLabels, label_sets: dict[str, list[str]], spec: str = "target,train",
                     label_ids: dict[str, list[str]] | None = None) -> Vocabulary:
    """A vocabulary from a comma-separated spec, in order, as a set (`TakenLabels`: a repeat keeps
    its first place and spelling, and is never embedded), in a run's space. A label that is a
    synonym list ("lion, king of beasts") is one candidate, read by the run's label rule.

    Parts: a key of `label_sets` ("target", "train"), `words:N` (the N most frequent plain nouns of
    the vector source), `file:PATH` (one word or phrase per line), or `wordnet:2hop`,
    `wordnet:3hop`, `wordnet:all`: every WordNet noun within 2 (3) hops of a target class, or every
    one, leaving out the training classes (Frome et al.'s protocol; needs wnids in `label_ids`).
    """
    check_vocabulary(spec, list(label_sets))
    label_ids = label_ids or {}
    labels: list[str] = []
    ids: list[str | None] = []
    vectors: list[torch.Tensor] = []
    taken = TakenLabels()
    missing = 0

    def add(new_labels: list[str], embed: Callable[..., torch.Tensor], new_ids: list[str] | None = None) -> None:
        """The labels not yet taken, embedded (`embed(labels, ids)`) and appended."""
        pairs = [(label, label_id) for label, label_id in zip(new_labels, new_ids or [None] * len(new_labels))
                 if taken.take(label, label_id)]
        if pairs:
            fresh, fresh_ids = [label for label, _ in pairs], [label_id for _, label_id in pairs]
            labels.extend(fresh)
            ids.extend(fresh_ids)
            vectors.extend(embed(fresh, fresh_ids))

    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        kind, _, value = part.partition(":")
        if kind in label_sets and not value:
            add(label_sets[kind], space.embed, label_ids.get(kind))
        elif kind == "words":
            if not COUNT.fullmatch(value) or int(value) <= 0:
                raise DeviseError(f"vocabulary part {part!r}: use words:N with N a positive number")
            add(space.vocabulary_words(int(value)), lambda words, _: space.embed_words(words))
        elif kind == "file":
            text = read_text_file(value, "vocabulary file")
            phrases = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
            add(phrases, space.embed)
        elif kind == "wordnet" and value in WORDNET_HOPS:
            wnids, names = wordnet_part(label_ids, WORDNET_HOPS[value], part)
            keep = space.available(names)
            missing += keep.count(False)
            kept = [i for i, ok in enumerate(keep) if ok]
            add([names[i] for i in kept], space.embed, [wnids[i] for i in kept])
        else:
            names = ", ".join([*label_sets, "words:N", "file:PATH", "wordnet:2hop|3hop|all"])
            raise DeviseError(f"unknown vocabulary part {part!r}; use a comma list of {names}")
    if not labels:
        raise DeviseError(f"vocabulary {spec!r} is empty")
    return Vocabulary(labels, torch.stack(vectors), spec, ids if any(i is not None for i in ids) else None, missing)


def check_vocabulary(spec: str, keys: list[str]) -> None:
    """One clear line for a vocabulary spec `build_vocabulary` would refuse (an unknown part, words:N
    without a positive N, a missing file, WordNet hops with no target), found before anything is
    loaded or encoded: a typo in the last part never costs the encoding of the first."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise DeviseError(f"vocabulary {spec!r} is empty")
    for part in parts:
        kind, _, value = part.partition(":")
        if kind in keys and not value:
            continue
        if kind not in ("words", "file", "wordnet") or (kind == "wordnet" and value not in WORDNET_HOPS):
            names = ", ".join([*keys, "words:N", "file:PATH", "wordnet:2hop|3hop|all"])
            raise DeviseError(f"unknown vocabulary part {part!r}; use a comma list of {names}")
        if kind == "words" and not (COUNT.fullmatch(value) and int(value) > 0):
            raise DeviseError(f"vocabulary part {part!r}: use words:N with N a positive number")
        if kind == "file" and not Path(value).expanduser().is_file():
            raise DeviseError(f"vocabulary part {part!r}: {value}: no such file")
        if kind == "wordnet" and WORDNET_HOPS[value] is not None and "target" not in keys:
            raise DeviseError(f"vocabulary part {part!r}: only wordnet:all applies here (2hop and 3hop count "
                              "hops from a zero-shot target's classes)")


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
