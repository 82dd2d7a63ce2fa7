"""Cosine ranking of predicted vectors against a vocabulary, top-k, in bounded memory.

Ranking 10,000 images against 400,000 words at once would need a 16 GB score matrix; instead
the vocabulary is scanned in chunks and only the running top k of each query is kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rank_topk(queries: torch.Tensor, vocabulary: torch.Tensor, k: int, chunk_size: int = 65536,
              normalized: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The k vocabulary rows most cosine-similar to each query: (scores, indices), best first.

    `queries` is N x D, `vocabulary` V x D. Rows are L2-normalised here unless `normalized`.
    Memory is O(N x (chunk_size + k)) whatever V is.
    """
    if not normalized:
        queries, vocabulary = F.normalize(queries.float(), dim=1), F.normalize(vocabulary.float(), dim=1)
    k = min(k, vocabulary.shape[0])
    best_scores = torch.full((queries.shape[0], 0), -float("inf"))
    best_index = torch.zeros((queries.shape[0], 0), dtype=torch.int64)
    for start in range(0, vocabulary.shape[0], chunk_size):
        scores = queries @ vocabulary[start : start + chunk_size].T
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        best_scores = torch.cat([best_scores, top.values], dim=1)
        best_index = torch.cat([best_index, top.indices + start], dim=1)
        keep = best_scores.topk(min(k, best_scores.shape[1]), dim=1)
        best_scores, best_index = keep.values, best_index.gather(1, keep.indices)
    return best_scores, best_index
