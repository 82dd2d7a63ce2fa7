"""WordNet 3.0's noun hierarchy, offline: every ImageNet wnid's names and its place among the others.

Frome et al. and Norouzi et al. measured zero-shot against WordNet: held-out images ranked among
the nouns within 2 or 3 hops of the held-out classes, scored by hierarchical precision@k. The
hierarchy ships with devise (`wordnet_nouns.tsv.gz`, `wordnet_senses.tsv.gz`, extracted from
Debian's wordnet-base by tools/extract_wordnet.py; licence in WORDNET_LICENSE).
"""

from __future__ import annotations

import functools
import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devise.errors import DeviseError

EXTRACT = Path(__file__).with_name("wordnet_nouns.tsv.gz")
SENSES = Path(__file__).with_name("wordnet_senses.tsv.gz")
WNID = re.compile(r"^n\d{8}$")


def is_wnid(label_id: str) -> bool:
    return bool(WNID.match(str(label_id)))


@dataclass
class WordNet:
    """Noun synsets by wnid: their names ("goldfish, Carassius auratus") and hypernym links."""

    names: dict[str, str]
    hypernyms: dict[str, list[str]]
    hyponyms: dict[str, list[str]] = field(default_factory=dict)
    first_senses: dict[str, str] = field(default_factory=dict)  # lemma -> wnid of its most frequent sense
    plain_nouns: frozenset[str] = frozenset()  # the lemmas English reads mainly as nouns (not "young", "ii")

    def __post_init__(self) -> None:
        if not self.hyponyms:
            for child, parents in self.hypernyms.items():
                for parent in parents:
                    self.hyponyms.setdefault(parent, []).append(child)

    def __contains__(self, wnid: str) -> bool:
        return wnid in self.names

    def neighbours(self, wnid: str) -> list[str]:
        return self.hypernyms.get(wnid, []) + self.hyponyms.get(wnid, [])

    def rings(self, start: list[str] | str) -> Iterator[set[str]]:
        """The synsets at 0, 1, 2, ... hops from `start` (one wnid or several), one ring at a time."""
        ring = {start} if isinstance(start, str) else set(start)
        ring &= set(self.names)
        seen = set(ring)
        while ring:
            yield ring
            ring = {n for wnid in ring for n in self.neighbours(wnid)} - seen
            seen |= ring

    def hypernym_name(self, wnid: str | None, text: str = "") -> str | None:
        """The first name of `wnid`'s first hypernym ("cyprinid" for goldfish): what a prompt's
        {parent} reads. Without a wnid, `text` is looked up as a noun and its most frequent sense
        taken ("lemon": the fruit, "citrus"). None for neither."""
        if not wnid:
            wnid = self.first_senses.get(" ".join(text.lower().split()))
        parents = self.hypernyms.get(wnid or "", [])
        return self.names[parents[0]].split(",")[0].strip() if parents else None

    def within(self, start: list[str] | str, hops: int) -> set[str]:
        """Every synset at most `hops` hops from `start`."""
        found: set[str] = set()
        for distance, ring in enumerate(self.rings(start)):
            if distance > hops:
                break
            found |= ring
        return found


def resolve_wnid(name: str, label_id: str | None = None) -> str | None:
    """The WordNet noun synset a label stands for: its id when that is a wnid WordNet has, else the
    most frequent noun sense of its first synonym that is a WordNet noun ("pizza": n07873807);
    None when neither resolves (a made-up name, a word that is no noun)."""
    wordnet = load_wordnet()
    if label_id and is_wnid(label_id):
        return label_id if label_id in wordnet else None
    for synonym in str(name).split(","):
        key = " ".join(synonym.replace("_", " ").lower().split())
        if key in wordnet.first_senses:
            return wordnet.first_senses[key]
    return None


def read_columns(path: Path) -> Iterator[list[str]]:
    """The tab-separated fields of each line of a packaged gzip file."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            yield from (line.rstrip("\n").split("\t") for line in handle)
    except (OSError, ValueError) as error:
        raise DeviseError(f"{path}: the packaged WordNet extract cannot be read ({error})") from None


@functools.cache
def load_wordnet(path: Path = EXTRACT, senses: Path = SENSES) -> WordNet:
    """The packaged noun hierarchy, each lemma's most frequent sense and the lemmas read mainly as
    nouns (loaded once a process, about a second)."""
    names, hypernyms, first_senses, plain_nouns = {}, {}, {}, set()
    try:
        for wnid, synonyms, parents in read_columns(path):
            names[wnid] = synonyms
            hypernyms[wnid] = parents.split()
        for lemma, wnid, mainly_noun in read_columns(senses):
            first_senses[lemma] = wnid
            if mainly_noun == "1":
                plain_nouns.add(lemma)
    except ValueError as error:
        raise DeviseError(f"the packaged WordNet extract is damaged ({error})") from None
    return WordNet(names, hypernyms, first_senses=first_senses, plain_nouns=frozenset(plain_nouns))


def correct_sets(wordnet: WordNet, true_id: str, candidates: set[str], ks: tuple[int, ...]) -> dict[int, set[str]]:
    """Frome et al.'s ground truth of hierarchical precision@k for one true label: for each k, the
    candidates within n hops of it, n growing from 0 until the set holds at least k of them."""
    sets, found, rings = {}, set(), wordnet.rings(true_id)
    for k in sorted(ks):
        while len(found) < k:
            ring = next(rings, None)
            if ring is None:  # the whole connected hierarchy holds fewer than k candidates
                break
            found |= ring & candidates
        sets[k] = set(found)
    return sets


def hierarchical_precision(top_ids: list[list[str | None]], true_ids: list[str], candidates: set[str],
                           wordnet: WordNet, ks: tuple[int, ...]) -> dict[str, float]:
    """Mean hierarchical precision@k over images: the share of each image's top k predictions
    (their wnids; None for a candidate outside WordNet) in its true label's `correct_sets`."""
    by_class = {true: correct_sets(wordnet, true, candidates, ks) for true in set(true_ids)}
    result = {}
    for k in ks:
        scores = [sum(p in by_class[true][k] for p in top[:k]) / k for top, true in zip(top_ids, true_ids)]
        result[f"hp@{k}"] = sum(scores) / len(scores) if scores else 0.0
    return result


def hop_vocabulary(wordnet: WordNet, held_out: list[str], hops: int | None, exclude: set[str]) -> list[str]:
    """The wnids within `hops` hops of any held-out class (every noun when `hops` is None), the
    held-out classes first, without the `exclude`d ones (the training classes), in a fixed order."""
    chosen = set(wordnet.names) if hops is None else wordnet.within(held_out, hops)
    rest = sorted(chosen - set(held_out) - exclude)
    return [w for w in held_out if w in wordnet] + rest


def ranking_hierarchy(top_index, candidate_ids: list[str | None] | None, true_ids: list[str],
                      ks: tuple[int, ...]) -> dict[str, float]:
    """hp@k of a ranking (`top_index`: each image's best candidate indices, best first) when the
    true labels are WordNet nouns; {} when they are not (CIFAR-100's names, a folder's)."""
    if not candidate_ids or not true_ids or not all(is_wnid(t) for t in set(true_ids)):
        return {}
    wordnet = load_wordnet()
    if not all(t in wordnet for t in set(true_ids)):
        return {}
    top_ids = [[candidate_ids[j] for j in row] for row in top_index.tolist()]
    candidates = {c for c in candidate_ids if c is not None}
    return hierarchical_precision(top_ids, true_ids, candidates, wordnet, ks)
