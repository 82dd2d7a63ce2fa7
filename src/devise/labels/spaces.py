"""Label spaces: every label becomes a unit vector the visual model learns to hit.

`WordVectorSpace` (GloVe, word2vec, fastText: a label of several words is the mean of its word
vectors, as in the DeViSE paper), `SentenceSpace` (a sentence encoder reading whole phrases, in
prompt templates if asked) and `RandomSpace` (the control) share one interface, `LabelSpace`;
`load_label_space(source, path, prompts)` is the one entry point. A label is a synonym list
("goldfish, Carassius auratus"): rule "first" takes the first synonym with a vector, "mean" the
mean of all that have one.
"""

from __future__ import annotations

import hashlib
import logging
import re
import string
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from devise.config import DEFAULT_RULE, LABEL_RULES
from devise.errors import DeviseError
from devise.labels.phrases import PhraseCache, encode_and_cache
from devise.labels.prompts import PARENT, fill_template, read_prompts
from devise.labels.sources import (
    MINILM,
    PACKAGED_GLOVE,
    WordVectors,
    check_source,
    load_sentence_model,
    load_word_vectors,
    model_digest,
)
from devise.labels.wordnet import load_wordnet

log = logging.getLogger(__name__)

RULES = LABEL_RULES


PLAIN_WORD = re.compile(r"^[a-z]+$")


SYNONYM_PIECES = re.compile(r"[\s_]+")


EDGE_PUNCTUATION = string.punctuation


def load_label_space(source: str = PACKAGED_GLOVE, path: str | Path | None = None,
                     prompts: str | None = None) -> LabelSpace:
    """The label space named by `source`: the one entry point for the rest of devise. `prompts`
    ("default" or a file of templates) makes a sentence space read each label in every template."""
    check_source(source)
    if source == MINILM:
        if path is not None:
            raise DeviseError("source 'minilm' is packaged and takes no path")
        return SentenceSpace(load_sentence_model(), MINILM, read_prompts(prompts))
    if prompts:
        raise DeviseError(f"--prompts is for sentence label spaces (minilm), not {source}")
    return WordVectorSpace(load_word_vectors(source, path), space_name(source, path))


def space_name(source: str, path: str | Path | None = None, prompts: str | list[str] | None = None) -> str:
    """The name a label space goes by in results and files: the source, the vectors file's name,
    "+prompts" for a sentence space read in templates ("minilm+prompts")."""
    name = source if path is None else f"{source}:{Path(path).name}"
    return name + ("+prompts" if prompts else "")


@dataclass(frozen=True)
class LabelMatch:
    """What a label was embedded from: the synonyms used and their tokens, or nothing."""

    label: str
    rule: str
    used: list[str] = field(default_factory=list)  # synonyms that were embedded
    tokens: list[list[str]] = field(default_factory=list)  # per used synonym: its vocabulary keys
    replacement: str | None = None  # the replacement text, when the label was replaced
    unknown: list[str] = field(default_factory=list)  # tokens without a vector

    @property
    def found(self) -> bool:
        return bool(self.tokens)

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "used": list(self.used), "tokens": [list(t) for t in self.tokens],
                "rule": self.rule, "found": self.found, "replacement": self.replacement,
                "unknown": list(self.unknown)}


def split_synonyms(text: str) -> list[str]:
    """'goldfish, Carassius auratus' -> ['goldfish', 'Carassius auratus']."""
    return [synonym.strip() for synonym in text.split(",") if synonym.strip()]


def check_rule(rule: str) -> None:
    if rule not in RULES:
        raise DeviseError(f"unknown label rule {rule!r}; choose one of: {', '.join(RULES)}")


def missing_labels_error(matches: list[LabelMatch], space_name: str) -> DeviseError:
    """One line naming every label without a vector, so the user can fix them all at once."""
    missing = [m.label for m in matches if not m.found]
    names = ", ".join(repr(label) for label in missing)
    plural = "label" if len(missing) == 1 else "labels"
    return DeviseError(f"no vector in {space_name} for {len(missing)} {plural}: {names}; "
                       "map them to other words with --replacements FILE (lines 'label<TAB>words')")


def segment_mean(rows: torch.Tensor, owners: list[int], count: int) -> torch.Tensor:
    """Mean of the rows that belong to each of `count` owners (owners[i] owns rows[i])."""
    index = torch.tensor(owners, dtype=torch.long)
    sums = torch.zeros(count, rows.shape[1], dtype=rows.dtype).index_add_(0, index, rows)
    sizes = torch.bincount(index, minlength=count).clamp(min=1).to(rows.dtype)
    return sums / sizes[:, None]


class LabelSpace(ABC):
    """Where labels live: turns class names into unit vectors of one fixed dimension."""

    name: str
    dim: int

    @abstractmethod
    def synonym_tokens(self, synonym: str) -> tuple[list[str], list[str]]:
        """(tokens to embed, tokens without a vector) for one synonym; tokens empty if unusable."""

    @abstractmethod
    def encode_synonyms(self, synonyms: list[list[str]], label_ids: list[str | None]) -> torch.Tensor:
        """One unit row per synonym, given as the tokens `synonym_tokens` returned, with the id of
        the label each belongs to (a wnid, or None)."""

    def vocabulary_words(self, n: int) -> list[str]:
        raise DeviseError(f"label space {self.name!r} has no word list; use a word-vector source")

    def match(self, label: str, rule: str = DEFAULT_RULE,
              replacements: dict[str, str] | None = None) -> LabelMatch:
        """Which synonyms of `label` (or of its replacement) the rule embeds."""
        check_rule(rule)
        replacement = (replacements or {}).get(label.strip())
        text = label if replacement is None else replacement
        used, tokens, unknown = [], [], []
        for synonym in split_synonyms(text):
            found, missing = self.synonym_tokens(synonym)
            if found:
                used.append(synonym)
                tokens.append(found)
                if rule == "first":
                    break
            else:
                unknown.extend(word for word in missing if word not in unknown)
        return LabelMatch(label, rule, used, tokens, replacement, unknown)

    def available(self, labels: list[str], rule: str = DEFAULT_RULE,
                  replacements: dict[str, str] | None = None) -> list[bool]:
        """Which labels have a vector (by the rule), without embedding them."""
        return [self.match(label, rule, replacements).found for label in labels]

    def embed(self, labels: list[str], rule: str = DEFAULT_RULE, replacements: dict[str, str] | None = None,
              ids: list[str | None] | None = None) -> torch.Tensor:
        """A float32 (len(labels), dim) tensor of unit rows; every label must have a vector.
        `ids` are the labels' WordNet ids where known, which hypernym prompts read."""
        matches = [self.match(label, rule, replacements) for label in labels]
        if not all(m.found for m in matches):
            raise missing_labels_error(matches, self.name)
        if not matches:
            return torch.zeros(0, self.dim)
        synonyms = [tokens for m in matches for tokens in m.tokens]
        owners = [i for i, m in enumerate(matches) for _ in m.tokens]
        rows = self.encode_synonyms(synonyms, [ids[i] if ids else None for i in owners])
        return F.normalize(segment_mean(rows, owners, len(matches)), dim=1).float()


def label_coverage(space: LabelSpace, labels: list[str], rule: str = DEFAULT_RULE,
                   replacements: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Per label: the synonyms and tokens used, or found=False; feeds `devise vectors check`."""
    return [space.match(label, rule, replacements).as_dict() for label in labels]


class WordVectorSpace(LabelSpace):
    """Labels as (means of) word vectors, the DeViSE paper's label space."""

    def __init__(self, keyed_vectors: WordVectors, name: str):
        self.kv = keyed_vectors
        self.name = name
        self.dim = int(keyed_vectors.vector_size)

    def __repr__(self) -> str:
        return f"WordVectorSpace({self.name!r}, {len(self.kv)} words, dim={self.dim})"

    def lookup(self, piece: str) -> str | None:
        """The vocabulary key for one piece of a synonym, trying the forms in the module docs."""
        stripped = piece.strip(EDGE_PUNCTUATION)
        forms = [piece.lower(), piece, stripped.lower(), stripped]
        if stripped.lower().endswith("'s"):
            forms += [stripped[:-2].lower(), stripped[:-2]]
        return next((form for form in forms if form and form in self.kv.key_to_index), None)

    def synonym_tokens(self, synonym: str) -> tuple[list[str], list[str]]:
        tokens, missing = [], []
        for piece in SYNONYM_PIECES.split(synonym.strip()):
            key = self.lookup(piece)
            if key is not None:
                tokens.append(key)
                continue
            for part in piece.split("-"):
                if not part.strip(EDGE_PUNCTUATION):
                    continue  # only punctuation, and no vector for it as written: drop it
                key = self.lookup(part)
                if key is None:
                    missing.append(part.strip(EDGE_PUNCTUATION).lower())
                else:
                    tokens.append(key)
        return ([] if missing else tokens), missing

    def rows(self, words: list[str]) -> torch.Tensor:
        """Raw vectors of vocabulary keys, gathered in one indexing operation."""
        indices = np.fromiter((self.kv.key_to_index[w] for w in words), dtype=np.int64, count=len(words))
        return torch.from_numpy(np.asarray(self.kv.vectors[indices], dtype=np.float32))

    def encode_synonyms(self, synonyms: list[list[str]], label_ids: list[str | None]) -> torch.Tensor:
        words = [word for tokens in synonyms for word in tokens]
        owners = [i for i, tokens in enumerate(synonyms) for _ in tokens]
        return F.normalize(segment_mean(self.rows(words), owners, len(synonyms)), dim=1)

    def embed_words(self, words: list[str]) -> torch.Tensor:
        """Unit vectors of single vocabulary words (e.g. a whole zero-shot vocabulary), vectorised."""
        missing = [w for w in words if w not in self.kv.key_to_index]
        if missing:
            shown = ", ".join(repr(w) for w in missing)
            raise DeviseError(f"no vector in {self.name} for {len(missing)} words: {shown}")
        return F.normalize(self.rows(list(words)), dim=1)

    def vocabulary_words(self, n: int) -> list[str]:
        """The n most frequent plain lowercase words that English reads mainly as nouns (by the
        packaged WordNet: "king", "torch"; not "the", "young", "ii"): candidate labels for
        open-vocabulary zero-shot, where a word that names nothing one could see only takes a place."""
        nouns = load_wordnet().plain_nouns
        words: list[str] = []
        for word in self.kv.index_to_key:
            if len(words) >= n:
                break
            if word in nouns and PLAIN_WORD.match(word):
                words.append(word)
        return words


class SentenceSpace(LabelSpace):
    """Labels as sentence-encoder embeddings of the whole phrase, not averaged words; with prompt
    templates, the mean of the phrase's embeddings in every template ("a photo of a {}."), whose
    {parent} clause names the label's WordNet hypernym (by the wnid `embed` is given, or else by
    the phrase's most frequent sense as a noun).

    Phrases are encoded once: their vectors are kept on disk (`PhraseCache`), so that a vocabulary
    of 20,000 words or every WordNet noun costs its encoding time only the first time.
    """

    def __init__(self, model: Any, name: str, templates: tuple[str, ...] = ()):
        self.model = model
        self.templates = tuple(templates)
        self.name = space_name(name, prompts=templates)
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.cache = PhraseCache(f"{name}-{model_digest(model)}", self.templates)

    def __repr__(self) -> str:
        return f"SentenceSpace({self.name!r}, dim={self.dim})"

    def synonym_tokens(self, synonym: str) -> tuple[list[str], list[str]]:
        phrase = " ".join(synonym.replace("_", " ").split())
        return ([phrase] if phrase else []), []

    def encode_synonyms(self, synonyms: list[list[str]], label_ids: list[str | None]) -> torch.Tensor:
        phrases = [" ".join(tokens) for tokens in synonyms]
        return self.encode_phrases(phrases, self.hypernyms(phrases, label_ids))

    def hypernyms(self, phrases: list[str], label_ids: list[str | None] | None = None) -> list[str | None]:
        """The name each phrase's {parent} clause reads (None: no clause), where a template has one:
        the hypernym of its label's wnid, or else of the phrase's most frequent sense as a noun."""
        if not any(PARENT in t for t in self.templates):
            return [None] * len(phrases)
        wordnet = load_wordnet()
        return [wordnet.hypernym_name(label_id, phrase) for phrase, label_id in zip(phrases, label_ids or [None] * len(phrases))]

    def encode_phrases(self, phrases: list[str], parents: list[str | None] | None = None) -> torch.Tensor:
        """One unit row per phrase (read with its parent's name where given): from the cache, the
        others encoded (and then cached)."""
        parents = parents or [None] * len(phrases)
        keys = [phrase if parent is None else f"{phrase}\t{parent}" for phrase, parent in zip(phrases, parents)]
        known = self.cache.lookup(keys)
        new = {key: pair for key, pair in zip(keys, zip(phrases, parents)) if key not in known}
        # In chunks, each cached when done: a long vocabulary (wordnet:all: 146,000 synonyms in six
        # templates, over an hour on two cores) reports as it goes and, if stopped, resumes.
        known.update(encode_and_cache(self.cache, list(new), list(new.values()), self.encode_uncached,
                                      encoder=self.name))
        return torch.stack([known[key] for key in keys]) if keys else torch.zeros(0, self.dim)

    def encode_uncached(self, phrases: list[tuple[str, str | None]]) -> torch.Tensor:
        """(phrase, parent) pairs encoded in every template and averaged."""
        templates = self.templates or ("{}",)
        texts = [fill_template(template, phrase, parent) for phrase, parent in phrases for template in templates]
        with torch.no_grad():
            vectors = self.model.encode(texts, convert_to_tensor=True, normalize_embeddings=True,
                                        show_progress_bar=False, batch_size=256)
        vectors = vectors.detach().to("cpu", torch.float32).reshape(len(phrases), len(templates), -1)
        return F.normalize(vectors.mean(dim=1), dim=1)

    def vocabulary_words(self, n: int) -> list[str]:
        """The n most frequent plain nouns of the packaged GloVe list: what `words:N` means in
        every label space, so that runs in different spaces rank the same candidates."""
        return WordVectorSpace(load_word_vectors(PACKAGED_GLOVE), PACKAGED_GLOVE).vocabulary_words(n)

    def embed_words(self, words: list[str]) -> torch.Tensor:
        return self.encode_phrases(list(words), self.hypernyms(list(words)))


class RandomSpace:
    """The random-vector control's labels: a unit vector per label, seeded by its text, so that a
    label always gets the same one."""

    def __init__(self, dim: int, seed: int):
        self.dim, self.seed, self.name = dim, seed, "random"

    def embed(self, labels: list[str], rule: str = DEFAULT_RULE, replacements: dict | None = None,
              ids: list[str | None] | None = None) -> torch.Tensor:
        rows = []
        for label in labels:
            digest = int.from_bytes(hashlib.sha256(label.encode()).digest()[:6], "big")
            rows.append(torch.randn(self.dim, generator=torch.Generator().manual_seed(self.seed + digest)))
        return F.normalize(torch.stack(rows), dim=1) if rows else torch.zeros(0, self.dim)

    def vocabulary_words(self, n: int) -> list[str]:
        raise DeviseError("the random-vector control has no word list; use target, train or file: vocabularies")

    def available(self, labels: list[str], rule: str = DEFAULT_RULE, replacements: dict | None = None) -> list[bool]:
        return [True] * len(labels)
