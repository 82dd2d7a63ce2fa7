"""Exact top-k of cosines in blocks, whatever the shapes, ties and screen precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from devise import hardware
from devise.evaluation.metrics import chance_hit_at_k, hit_at_k
from devise.model import topk as rank
from devise.model.topk import rank_topk


def test_hit_at_k_matches_a_brute_force_argsort():
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(500, 37, generator=generator)
    labels = torch.randint(0, 37, (500,), generator=generator)
    result = hit_at_k(scores, labels, (1, 2, 3, 5, 10, 20))
    ranks = (scores.argsort(dim=1, descending=True) == labels[:, None]).float().argmax(dim=1)
    for k in (1, 2, 3, 5, 10, 20):
        assert result[f"hit@{k}"] == pytest.approx(float((ranks < k).float().mean()))
    assert chance_hit_at_k(200)["hit@5"] == 0.025


@pytest.mark.parametrize("group", [3, 64])
@pytest.mark.parametrize("chunk_size", [7, 100, 5000])
def test_chunked_ranking_equals_brute_force(chunk_size, group):
    generator = torch.Generator().manual_seed(4)
    queries = torch.randn(50, 16, generator=generator)
    vocabulary = torch.randn(1234, 16, generator=generator)
    scores, index = rank_topk(queries, vocabulary, k=10, chunk_size=chunk_size, group=group)
    brute = F.normalize(queries, dim=1) @ F.normalize(vocabulary, dim=1).T
    expected = brute.topk(10, dim=1)
    assert torch.equal(index, expected.indices)
    assert torch.allclose(scores, expected.values, atol=1e-6)


def test_near_ties_that_the_bf16_screen_cannot_settle_are_ranked_exactly(monkeypatch):
    # 30 directions, each in every group of words with tiny noise: all groups have near-equal best
    # scores, closer than bf16 can tell apart, so the screen cannot prove its top k for most queries.
    generator = torch.Generator().manual_seed(5)
    directions = torch.randn(30, 50, generator=generator).repeat(100, 1)
    vocabulary = F.normalize(directions + 1e-4 * torch.randn(3000, 50, generator=generator), dim=1)
    queries = F.normalize(torch.randn(40, 50, generator=generator), dim=1)
    exact_rows = []
    original = rank.exact_topk
    monkeypatch.setattr(rank, "exact_topk", lambda q, *args: exact_rows.append(len(q)) or original(q, *args))
    monkeypatch.setattr(rank, "bf16_native", lambda device: True)  # the bf16 screen, on any host
    scores, index = rank.rank_topk(queries, vocabulary, k=10, normalized=True, group=8)
    brute = queries @ vocabulary.T
    expected = brute.topk(10, dim=1).values
    assert sum(exact_rows) > 0, "the fallback ran"
    # Words this close can swap places between two float32 summation orders: compare their scores.
    assert torch.allclose(brute.gather(1, index), expected, atol=1e-6)
    assert torch.allclose(scores, expected, atol=1e-6)


@pytest.mark.parametrize("dim", [16, 50, 384])
def test_the_bf16_screen_stays_within_its_error_bound(dim):
    generator = torch.Generator().manual_seed(6)
    vocabulary = F.normalize(torch.randn(64 * 50, dim, generator=generator), dim=1)
    queries = F.normalize(torch.randn(30, dim, generator=generator), dim=1)
    maxima = rank.group_maxima(queries, vocabulary.to(torch.bfloat16), chunk_size=640, group=64)
    exact = (queries @ vocabulary.T).view(30, 50, 64).amax(dim=2)
    assert (maxima - exact).abs().max() <= rank.screening_error(dim)


def screens_used(monkeypatch) -> list[torch.dtype]:
    used = []
    original = rank.group_maxima
    monkeypatch.setattr(rank, "group_maxima", lambda q, screen, *args: used.append(screen.dtype) or original(q, screen, *args))
    return used


@pytest.mark.parametrize("native, screen", [(False, torch.float32), (True, torch.bfloat16)])
def test_ranking_screens_in_bf16_only_where_native_and_is_exact_either_way(monkeypatch, native, screen):
    monkeypatch.setattr(hardware, "cpu_bf16_native", lambda: native)
    used = screens_used(monkeypatch)
    generator = torch.Generator().manual_seed(7)
    vocabulary = F.normalize(torch.randn(20000, 50, generator=generator), dim=1)
    queries = F.normalize(torch.randn(300, 50, generator=generator), dim=1)
    scores, index = rank.rank_topk(queries, vocabulary, k=10, normalized=True)
    assert used and set(used) == {screen}
    expected = (queries @ vocabulary.T).topk(10, dim=1)
    assert torch.allclose(scores, expected.values, atol=1e-6)
    assert torch.allclose((queries @ vocabulary.T).gather(1, index), expected.values, atol=1e-6)


def test_the_float32_screen_needs_only_the_summation_margin():
    assert rank.screening_error(50, torch.float32) < 1e-4 < rank.screening_error(50, torch.bfloat16)


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
