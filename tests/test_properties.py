"""Properties that must hold for any input, not just the examples we thought of (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from devise.errors import DeviseError
from devise.evaluation.metrics import hit_at_k, semantic_similarity, similarity_control
from devise.labels.sources import keyed_vectors
from devise.labels.spaces import WordVectorSpace
from devise.model.topk import rank_topk

SETTINGS = settings(max_examples=60, deadline=None)


def matrices(rows, dim, small_integers: bool):
    """Float matrices; with `small_integers` their entries come from {-2, ..., 2}: many exact ties."""
    elements = (st.integers(-2, 2).map(float) if small_integers
                else st.floats(-10, 10, allow_nan=False, allow_subnormal=False, width=32))
    return arrays(np.float32, (rows, dim), elements=elements)


@st.composite
def ranking_cases(draw):
    dim = draw(st.integers(1, 12))
    ties = draw(st.booleans())
    queries = draw(matrices(draw(st.integers(1, 12)), dim, ties))
    vocabulary = draw(matrices(draw(st.integers(1, 300)), dim, ties))
    k = draw(st.integers(1, 25))
    return (torch.from_numpy(queries), torch.from_numpy(vocabulary), k, draw(st.integers(1, 400)),
            draw(st.integers(1, 70)), draw(st.sampled_from([torch.float32, torch.bfloat16])))


@SETTINGS
@given(ranking_cases())
def test_ranking_equals_brute_force_sorting_for_any_shapes_chunks_and_ties(case):
    queries, vocabulary, k, chunk_size, group, screen = case
    scores, index = rank_topk(queries, vocabulary, k, chunk_size=chunk_size, group=group, screen=screen)
    brute = F.normalize(queries, dim=1) @ F.normalize(vocabulary, dim=1).T
    best = brute.sort(dim=1, descending=True).values[:, :min(k, vocabulary.shape[0])]
    assert scores.shape == index.shape == best.shape
    torch.testing.assert_close(scores, best, atol=1e-5, rtol=0)
    # Among tied words any may come first, but each listed word scores what is reported, once.
    torch.testing.assert_close(brute.gather(1, index), best, atol=1e-5, rtol=0)
    assert all(len(set(row)) == len(row) for row in index.tolist())


@SETTINGS
@given(st.integers(1, 60), st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_hit_at_k_is_the_share_of_true_labels_ranked_within_k(images, classes, seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.stack([torch.randperm(classes, generator=generator).float() for _ in range(images)])  # no ties
    labels = torch.randint(0, classes, (images,), generator=generator)
    ks = tuple(range(1, classes + 2))
    result = hit_at_k(scores, labels, ks)
    rank = (scores > scores.gather(1, labels[:, None])).sum(dim=1)  # how many classes beat the true one
    for k in ks:
        assert result[f"hit@{k}"] == pytest.approx(float((rank < k).float().mean()))
    assert [result[f"hit@{k}"] for k in ks] == sorted(result[f"hit@{k}"] for k in ks)
    assert result[f"hit@{classes}"] == 1.0


WORDS = ["cat", "dog", "big", "red", "fish", "gold", "sea", "lion"]


@st.composite
def labels_and_space(draw):
    vectors = draw(arrays(np.float32, (len(WORDS), 5), elements=st.floats(0.125, 3, width=32)))
    word = st.sampled_from(WORDS + ["zzq"])  # "zzq" has no vector
    synonyms = st.lists(st.lists(word, min_size=1, max_size=3).map(" ".join), min_size=1, max_size=3)
    return WordVectorSpace(keyed_vectors(WORDS, vectors), "test"), draw(synonyms)


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


@SETTINGS
@given(st.integers(1, 20), st.integers(1, 5), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_semantic_similarity_is_the_mean_cosine_to_the_top_predictions(images, top, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    true = F.normalize(torch.randn(images, dim, generator=generator), dim=1)
    predicted = F.normalize(torch.randn(images, top, dim, generator=generator), dim=2)
    similarity = semantic_similarity(true, predicted)
    by_hand = torch.tensor([sum(float(true[i] @ predicted[i, j]) for j in range(top)) / top for i in range(images)])
    torch.testing.assert_close(similarity, by_hand, atol=1e-5, rtol=0)
    assert (similarity.abs() <= 1 + 1e-5).all()
    # Predicting the true label itself every time scores 1; the control of a set against itself is its mean cosine.
    torch.testing.assert_close(semantic_similarity(true, true[:, None, :].expand(-1, top, -1)), torch.ones(images))
    assert -1 - 1e-5 <= similarity_control(true, true, pairs=500, seed=seed % 1000) <= 1 + 1e-5
