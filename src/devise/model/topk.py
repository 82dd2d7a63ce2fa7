"""Exact cosine top-k of queries against a vocabulary of any size, in cache-sized blocks, and the
top-k hit counts that training and evaluation share. Where bf16 is native a bf16 screen of block
maxima picks the blocks worth an exact float32 pass (docs/performance.md, "Ranking").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from devise.hardware import bf16_native


def screening_error(dim: int, screen: torch.dtype = torch.bfloat16) -> float:
    """A bound on |screened score - exact score| for unit vectors of `dim` components: the float32
    sums of the screening multiply and of the exact rescoring (dim * 2^-24 each, doubled for
    slack), and for a bf16 screen also both inputs rounded to bf16 (relative error 2^-9 each, so
    2^-8 + 2^-18 on the dot product, by Cauchy-Schwarz) and the result rounded once (2^-9)."""
    sums = dim * 2**-22
    return sums if screen == torch.float32 else 2**-8 + 2**-18 + 2**-9 + sums


def rank_topk(queries: torch.Tensor, vocabulary: torch.Tensor, k: int, *, chunk_size: int = 16384,
              normalized: bool = False, max_scores: int = 2**22, group: int = 64,
              candidates: int = 16, screen: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k vocabulary rows most cosine-similar to each query: (scores, indices), best first.

    `queries` is N x D, `vocabulary` V x D. Rows are L2-normalised here unless `normalized`.
    The result is exact (float32 scores). Vocabulary rows are cut into groups of `group`; a
    multiply in the `screen` precision (default: bfloat16 where the device computes it natively,
    float32 elsewhere) gives each group's best score to within `screening_error`, and the
    `candidates` groups with the highest such maxima are scored exactly. Every word left out scores at most the best left-out maximum plus
    that error, so when the k-th exact score is at least that high the top k is proven. Queries
    where it is not get 8x as many candidate groups, and the rare ones still unproven (a crowd
    of near-ties) are ranked by `exact_topk`.
    """
    if not normalized:
        queries, vocabulary = F.normalize(queries.float(), dim=1), F.normalize(vocabulary.float(), dim=1)
    k = min(k, vocabulary.shape[0])
    candidates = max(candidates, math.ceil(k / group) + 1)
    if queries.shape[0] == 0 or vocabulary.shape[0] <= candidates * group:
        return exact_topk(queries, vocabulary, k, chunk_size, max_scores, group)
    if screen is None:
        screen = torch.bfloat16 if bf16_native(queries.device) else torch.float32
    chunk_size = max(group, chunk_size // group * group)
    padded = F.pad(vocabulary, (0, 0, 0, -vocabulary.shape[0] % group))  # zero rows, dropped after rescoring
    screened = padded.to(screen)
    query_block = max(1, max_scores // chunk_size)
    scores, index = [], []
    for q in range(0, queries.shape[0], query_block):
        block = queries[q : q + query_block]
        maxima = group_maxima(block, screened, chunk_size, group)
        block_scores, block_index, unproven = screened_topk(block, padded, maxima, k, group, vocabulary.shape[0],
                                                            candidates, screening_error(padded.shape[1], screen))
        if len(unproven):
            block_scores[unproven], block_index[unproven] = exact_topk(block[unproven], vocabulary, k, chunk_size,
                                                                       max_scores, group)
        scores.append(block_scores)
        index.append(block_index)
    return torch.cat(scores), torch.cat(index)


def screened_topk(queries: torch.Tensor, padded: torch.Tensor, maxima: torch.Tensor, k: int, group: int, words: int,
                  candidates: int, margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The proven exact top k of each query from its best-screened groups: `candidates` of them,
    then 8x as many for the queries the first round cannot prove; (scores, index, rows unproven).
    `margin` bounds how far a screened maximum may lie from the exact one."""
    scores, index = torch.empty(len(queries), k), torch.empty(len(queries), k, dtype=torch.int64)
    todo = torch.arange(len(queries))
    for width in (candidates, 8 * candidates):
        width = min(width, maxima.shape[1])
        best = maxima[todo].topk(width, dim=1)
        top_scores, top_index = rescore(queries[todo], padded, best.indices, k, group, words)
        proven = (top_scores[:, -1] >= best.values[:, -1] + margin) | (width == maxima.shape[1])
        scores[todo[proven]], index[todo[proven]] = top_scores[proven], top_index[proven]
        todo = todo[~proven]
        if not len(todo):
            break
    return scores, index, todo


def group_maxima(queries: torch.Tensor, screen: torch.Tensor, chunk_size: int, group: int) -> torch.Tensor:
    """Queries x groups: the best screened score in each group of `group` consecutive vocabulary
    rows (`screen` is the vocabulary in the screening precision). Scores are laid out words x
    queries, so a group's maximum is an element-wise max of rows."""
    columns = queries.T.contiguous().to(screen.dtype)
    maxima = torch.empty(screen.shape[0] // group, queries.shape[0], dtype=screen.dtype)
    for start in range(0, screen.shape[0], chunk_size):
        scores = screen[start : start + chunk_size] @ columns
        torch.amax(scores.view(-1, group, queries.shape[0]), dim=1,
                   out=maxima[start // group : (start + scores.shape[0]) // group])
    return maxima.T.float()


def rescore(queries: torch.Tensor, padded: torch.Tensor, groups: torch.Tensor, k: int, group: int,
            words: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact top k of each query among the words of its candidate `groups` (queries x m),
    gathered a few queries at a time (at most 512 groups of words copied at once)."""
    grouped = padded.view(-1, group, padded.shape[1])
    query_slice = max(1, 512 // groups.shape[1])
    rows = (groups[:, :, None] * group + torch.arange(group)).flatten(1)
    scores = torch.cat([torch.einsum("qd,qmgd->qmg", queries[s : s + query_slice], grouped[groups[s : s + query_slice]])
                        for s in range(0, queries.shape[0], query_slice)]).flatten(1)
    top = scores.masked_fill(rows >= words, float("-inf")).topk(k, dim=1)
    return top.values, rows.gather(1, top.indices)


def exact_topk(queries: torch.Tensor, vocabulary: torch.Tensor, k: int, chunk_size: int, max_scores: int,
               group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 all the way: blocks of queries against chunks of the vocabulary, running top k."""
    chunk_size = min(chunk_size, vocabulary.shape[0])
    query_block = max(1, max_scores // chunk_size)
    columns = vocabulary.T.contiguous()
    scores, index = [], []
    for q in range(0, queries.shape[0], query_block):
        block_scores, block_index = top_of_block(queries[q : q + query_block], columns, k, chunk_size, group)
        scores.append(block_scores)
        index.append(block_index)
    if not scores:
        return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.int64)
    return torch.cat(scores), torch.cat(index)


def top_of_block(queries: torch.Tensor, columns: torch.Tensor, k: int, chunk_size: int, group: int):
    """Running top k of one block of queries over the vocabulary (given as D x V `columns`),
    one chunk at a time."""
    best_scores = torch.empty((queries.shape[0], 0))
    best_index = torch.empty((queries.shape[0], 0), dtype=torch.int64)
    for start in range(0, columns.shape[1], chunk_size):
        top_scores, top_index = grouped_topk(queries @ columns[:, start : start + chunk_size], k, group)
        best_scores = torch.cat([best_scores, top_scores], dim=1)
        best_index = torch.cat([best_index, top_index + start], dim=1)
        if start > 0:  # merge this chunk with the best so far (chunks may hold fewer than k words)
            keep = best_scores.topk(min(k, best_scores.shape[1]), dim=1)
            best_scores, best_index = keep.values, best_index.gather(1, keep.indices)
    return best_scores, best_index


def grouped_topk(scores: torch.Tensor, k: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact top k of each row, found without running top-k over the whole row.

    Columns are cut into groups of `group`. Each of the k best scores lies in a group whose
    maximum is at least that score, and at most k groups can have a maximum that high, so the
    k groups with the largest maxima hold all of them. A max per group is a fast vectorised
    reduction; top-k then runs over k * group candidates instead of the whole row.
    """
    rows, width = scores.shape
    if width <= k * group:
        return scores.topk(min(k, width), dim=1)
    if width % group:
        scores = F.pad(scores, (0, group - width % group), value=float("-inf"))
    grouped = scores.view(rows, -1, group)
    best_groups = grouped.amax(dim=2).topk(k, dim=1).indices  # rows x k
    candidates = grouped.gather(1, best_groups[:, :, None].expand(-1, -1, group)).flatten(1)
    columns = (best_groups[:, :, None] * group + torch.arange(group)).flatten(1)
    top = candidates.topk(k, dim=1)
    return top.values, columns.gather(1, top.indices)


def topk_counts(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...]) -> torch.Tensor:
    """How many rows have their true label among the k highest scores, one count per k, left on
    the scores' device (a training loop on a GPU adds them up without waiting for each step).

    Ties are broken by `torch.topk`'s order; k larger than the number of classes counts all.
    """
    k_max = min(max(ks), scores.shape[1])
    top = scores.topk(k_max, dim=1).indices
    found = top == labels[:, None]
    cumulative = found.cumsum(dim=1).clamp_(max=1)
    return torch.stack([cumulative[:, min(k, k_max) - 1].sum() for k in ks])


def topk_hits(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...]) -> dict[int, int]:
    """`topk_counts` as a dict {k: count}."""
    return dict(zip(ks, topk_counts(scores, labels, ks).tolist()))
