"""Vocabularies are sets: each candidate once (case and spacing folded, its first spelling and place
kept), words:N the N most frequent nouns, and a synonym list one candidate read by the run's rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from devise.cli import main
from devise.errors import DeviseError
from devise.labels.run_labels import RunLabels
from devise.labels.spaces import RandomSpace, load_label_space
from devise.labels.vocabulary import TakenLabels, build_vocabulary, check_vocabulary, label_key, unique_labels

TORCH = "n04456115"  # Tiny ImageNet's class "torch"


def word_space(tmp_path, words: list[str], rule: str = "mean") -> RunLabels:
    """A run's labels over a word2vec file of `words`, in that (frequency) order, random vectors."""
    vectors = np.random.default_rng(0).normal(size=(len(words), 5)).astype(np.float32)
    path = tmp_path / "vectors.txt"
    path.write_text(f"{len(words)} 5\n" + "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in zip(words, vectors)))
    return RunLabels(load_label_space("word2vec-text", path), rule)


def test_labels_are_compared_with_case_spacing_and_underscores_folded():
    assert label_key("Lion,King_of  beasts") == label_key(" lion, king of beasts ") == "lion, king of beasts"
    assert label_key("fire ant") != label_key("fire, ant")


def test_unique_labels_keep_the_first_spelling_of_each_at_its_first_place():
    assert unique_labels(["Torch", "cat", "torch ", "TORCH", "fire ant", "fire_ant", "Cat"]) == ["Torch", "cat", "fire ant"]


def test_a_vocabulary_is_a_set_whose_repeats_are_never_embedded(tmp_path):
    file = tmp_path / "labels.txt"
    file.write_text("fire  ANT\nGoldfish,Carassius_auratus\nlawn mower\nLawn Mower\n")
    space = RunLabels(RandomSpace(8, seed=0))
    vocabulary = build_vocabulary(space, {"train": ["Fire ant", "goldfish, Carassius auratus"]}, f"train,file:{file}")
    assert vocabulary.labels == ["Fire ant", "goldfish, Carassius auratus", "lawn mower"]
    torch.testing.assert_close(vocabulary.vectors, space.embed(vocabulary.labels))


def test_a_word_that_repeats_a_class_with_a_wordnet_id_is_one_candidate_under_the_class(tmp_path):
    space = word_space(tmp_path, ["the", "torch", "lamp"])
    vocabulary = build_vocabulary(space, {"train": ["torch"]}, "train,words:2", {"train": [TORCH]})
    assert vocabulary.labels == ["torch", "lamp"] and vocabulary.ids == [TORCH, None]


def test_two_wordnet_senses_of_one_name_stay_two_candidates_and_a_plain_repeat_goes():
    taken = TakenLabels()
    assert taken.take("crane", "n02012849") and taken.take("crane", "n03126707"), "the bird and the machine"
    assert not taken.take("Crane", None) and not taken.take("crane", "n02012849")


def test_words_n_are_the_n_most_frequent_nouns(tmp_path):
    space = word_space(tmp_path, ["the", "ii", "young", "in", "king", "of", "name", "lion", "he", "torch", "queen"])
    assert build_vocabulary(space, {}, "words:3").labels == ["king", "name", "lion"]
    assert build_vocabulary(space, {}, "words:100").labels == ["king", "name", "lion", "torch", "queen"]


def test_the_default_words_are_nouns_of_the_packaged_glove_and_as_many_as_asked():
    vocabulary = build_vocabulary(RunLabels(load_label_space()), {}, "words:2000")
    assert len(vocabulary) == 2000 and len({label_key(label) for label in vocabulary.labels}) == 2000
    assert {"year", "city", "king"} <= set(vocabulary.labels)
    assert not {"the", "ii", "young", "in", "he", "first"} & set(vocabulary.labels)


@pytest.mark.parametrize("spec", ["words:²", "words:٣", "words:0", "words:-5"])
def test_words_with_no_positive_ascii_count_is_one_clear_line(spec):
    for refuse in (lambda: check_vocabulary(spec, ["train"]),
                   lambda: build_vocabulary(RunLabels(RandomSpace(4, seed=0)), {"train": ["cat"]}, spec)):
        with pytest.raises(DeviseError, match="use words:N with N a positive number") as caught:
            refuse()
        assert "\n" not in str(caught.value)


def test_devise_predict_refuses_words_squared_in_one_line(toy_runs, tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert main(["predict", str(toy_runs["devise"]), str(tmp_path / "a.png"), "--vocabulary", "train,words:²"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "words:N with N a positive number" in error and "Traceback" not in error


@pytest.mark.parametrize("rule", ["first", "mean"])
def test_a_synonym_list_is_one_candidate_read_by_the_run_rule_not_word_by_word(tmp_path, rule):
    space = word_space(tmp_path, ["lion", "king", "of", "beasts", "queen"], rule)
    file = tmp_path / "labels.txt"
    file.write_text("lion, king of beasts\nqueen\n")
    vocabulary = build_vocabulary(space, {}, f"file:{file}")
    assert vocabulary.labels == ["lion, king of beasts", "queen"] and "king" not in vocabulary.labels
    lion, king, of, beasts = space.space.kv.vectors[:4]
    synonyms = [torch.tensor(lion)] + ([torch.tensor((king + of + beasts) / 3)] if rule == "mean" else [])
    expected = F.normalize(torch.stack([F.normalize(s, dim=0) for s in synonyms]).mean(dim=0), dim=0)
    torch.testing.assert_close(vocabulary.vectors[0], expected)


def test_a_training_label_that_is_a_synonym_list_is_one_candidate_with_its_trained_vector():
    trained = F.normalize(torch.ones(4), dim=0)
    space = RunLabels(RandomSpace(4, seed=0), known={"lion, king of beasts": trained})
    vocabulary = build_vocabulary(space, {"train": ["lion, king of beasts"]}, "train")
    assert vocabulary.labels == ["lion, king of beasts"]
    torch.testing.assert_close(vocabulary.vectors[0], trained)
