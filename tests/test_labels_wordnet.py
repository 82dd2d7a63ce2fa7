"""WordNet offline, hierarchical precision@k by hand, and the hop vocabularies."""

from __future__ import annotations

import pytest
import torch

from devise.labels.run_labels import RunLabels
from devise.labels.spaces import load_label_space
from devise.labels.vocabulary import build_vocabulary
from devise.labels.wordnet import (
    EXTRACT,
    WordNet,
    correct_sets,
    hierarchical_precision,
    hop_vocabulary,
    is_wnid,
    load_wordnet,
    ranking_hierarchy,
)

#   animal
#   +-- cat -- lion, tiger
#   +-- dog -- wolf
SMALL = WordNet(names={w: w for w in ("animal", "cat", "dog", "lion", "tiger", "wolf")},
                hypernyms={"cat": ["animal"], "dog": ["animal"], "lion": ["cat"], "tiger": ["cat"], "wolf": ["dog"]})


def test_rings_are_hops_up_and_down():
    assert list(SMALL.rings("tiger")) == [{"tiger"}, {"cat"}, {"animal", "lion"}, {"dog"}, {"wolf"}]
    assert SMALL.within("tiger", 2) == {"tiger", "cat", "animal", "lion"}


def test_correct_sets_grow_by_hops_until_they_hold_k_candidates():
    candidates = {"lion", "tiger", "wolf", "dog"}
    sets = correct_sets(SMALL, "tiger", candidates, (1, 2, 3, 4, 9))
    assert sets[1] == {"tiger"}
    assert sets[2] == {"tiger", "lion"}  # 1 hop adds no candidate, 2 hops add lion
    assert sets[3] == {"tiger", "lion", "dog"}
    assert sets[4] == sets[9] == candidates  # no more candidates anywhere


def test_hierarchical_precision_by_hand():
    candidates = {"lion", "tiger", "wolf", "dog"}
    # An image of a tiger predicted lion, tiger, wolf; one of a wolf predicted wolf, dog, lion.
    result = hierarchical_precision([["lion", "tiger", "wolf"], ["wolf", "dog", "lion"]], ["tiger", "wolf"],
                                    candidates, SMALL, (1, 2, 3))
    # tiger: @1 {tiger} -> 0; @2 {tiger, lion} -> 2/2; @3 {tiger, lion, dog} -> 2/3.
    # wolf: rings wolf | dog | animal | cat | lion, tiger: @1 {wolf} -> 1; @2 {wolf, dog} -> 2/2;
    #       @3 {wolf, dog, lion, tiger} (the ring at 4 hops holds both) -> 3/3.
    assert result == pytest.approx({"hp@1": (0 + 1) / 2, "hp@2": (1 + 1) / 2, "hp@3": (2 / 3 + 1) / 2})
    # A prediction outside WordNet (None, a plain word of the vocabulary) is never correct.
    assert hierarchical_precision([[None, "tiger"]], ["tiger"], candidates, SMALL, (2,))["hp@2"] == 0.5


def test_hop_vocabularies_put_the_held_out_classes_first_and_leave_out_the_training_ones():
    assert hop_vocabulary(SMALL, ["tiger"], 2, exclude={"lion"}) == ["tiger", "animal", "cat"]
    assert hop_vocabulary(SMALL, ["tiger"], None, exclude={"lion"}) == ["tiger", "animal", "cat", "dog", "wolf"]


def test_the_packaged_wordnet_names_every_imagenet_synset_and_links_them():
    wordnet = load_wordnet()
    assert len(wordnet.names) == 82_115 and EXTRACT.with_name("WORDNET_LICENSE").is_file()
    assert wordnet.names["n01443537"] == "goldfish, Carassius auratus"
    tiger, big_cat = "n02129604", "n02127808"
    assert wordnet.names[tiger].startswith("tiger") and big_cat in wordnet.hypernyms[tiger]
    assert "n02128925" in wordnet.within(tiger, 2), "the jaguar is a sibling of the tiger"
    assert is_wnid(tiger) and not is_wnid("tiger")


TIGER, JAGUAR, BIG_CAT, GOLDFISH, HOUSE_CAT = "n02129604", "n02128925", "n02127808", "n01443537", "n02123045"


def test_rankings_of_wordnet_classes_get_hierarchical_precision_and_others_none():
    candidates = [TIGER, JAGUAR, GOLDFISH]
    # A tiger image ranked jaguar first: wrong at k = 1, but the jaguar is 2 hops from the tiger.
    result = ranking_hierarchy(torch.tensor([[1, 0, 2]]), candidates, [TIGER], (1, 2))
    assert result == {"hp@1": 0.0, "hp@2": 1.0}
    assert ranking_hierarchy(torch.tensor([[0]]), ["cat", "dog"], ["cat"], (1,)) == {}  # not WordNet ids


def test_a_two_hop_vocabulary_holds_the_neighbours_of_the_held_out_class_but_no_training_class():
    space = RunLabels(load_label_space())
    vocabulary = build_vocabulary(space, {"target": ["tiger"], "train": ["jaguar"]}, "target,wordnet:2hop",
                                  {"target": [TIGER], "train": [JAGUAR]})
    assert vocabulary.labels[0] == "tiger" and vocabulary.ids[0] == TIGER
    assert BIG_CAT in vocabulary.ids and JAGUAR not in vocabulary.ids
    assert len(vocabulary) + vocabulary.missing == len(load_wordnet().within(TIGER, 2)) - 1  # less the jaguar
    assert vocabulary.positions(["tiger"], [TIGER]).tolist() == [0]
    with pytest.raises(Exception, match="WordNet ids"):
        build_vocabulary(space, {"target": ["cat"]}, "wordnet:2hop", {"target": ["cat"]})


def test_zero_shot_over_a_two_hop_vocabulary_scores_flat_and_hierarchical_precision():
    from types import SimpleNamespace

    from devise.data import ImageSet
    from devise.evaluation.zeroshot import ZeroShotModel, evaluate_zero_shot

    space = RunLabels(load_label_space())
    # Two held-out classes, four images; a model trained on the jaguar and the goldfish.
    names = load_wordnet().names  # Tiny ImageNet's class names are these synonym lists
    target = ImageSet(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]),
                      [names[TIGER], names[HOUSE_CAT]], "held out", [TIGER, HOUSE_CAT])
    trained = SimpleNamespace(labels=[names[JAGUAR], names[GOLDFISH]], label_ids=[JAGUAR, GOLDFISH],
                              body_trained_on={"description": "jaguar and goldfish", "ids": [JAGUAR, GOLDFISH]},
                              stock=False)  # the parts of a DeviseModel that scoring reads
    model = ZeroShotModel("DeViSE (perfect)", "DeViSE", trained)
    outputs = {model.name: space.embed(target.class_names)[target.labels]}  # each image predicts its label's vector
    results = evaluate_zero_shot([model], target, space, "wordnet:2hop", outputs)
    entry = results["models"][model.name]
    assert entry["hit@1"] == entry["hp@1"] == 1.0  # over the two target labels
    assert entry["vocabulary_size"] > 20 and entry["vocabulary_hit@1"] == entry["vocabulary_hp@1"] == 1.0
    assert 0 < entry["vocabulary_hp@20"] <= 1.0
