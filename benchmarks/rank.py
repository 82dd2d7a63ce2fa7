"""Rank 10,000 query vectors against all 400,000 GloVe words, top-10, three ways, in one run.

(a) devise.rank.rank_topk (a bf16 screen of group maxima, then exact float32 rescoring of the
candidate groups), (b) gensim's KeyedVectors.most_similar called once per vector (timed on a sample
of queries and scaled up), (c) the floor: the float32 matrix multiplies without any top-k. Prints
one JSON line per result, the ratios, and whether (a) agrees with a brute-force float32 top-k on
the first 500 queries. Usage: python benchmarks/rank.py [--queries 10000] [--gensim-sample 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from devise.rank import rank_topk
from devise.vectors import load_word_vectors


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--gensim-sample", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    kv = load_word_vectors()
    vocabulary = F.normalize(torch.from_numpy(kv.vectors), dim=1)
    queries = F.normalize(torch.randn(args.queries, vocabulary.shape[1], generator=torch.Generator().manual_seed(0)), dim=1)

    def floor() -> None:
        block = 2**25 // vocabulary.shape[0] or 1
        for q in range(0, len(queries), block):
            queries[q : q + block] @ vocabulary.T

    def ours() -> None:
        rank_topk(queries, vocabulary, 10, normalized=True)

    sample = queries[: args.gensim_sample].numpy()

    def gensim_loop() -> None:
        for vector in sample:
            kv.most_similar(positive=[vector], topn=10)

    results = {}
    for name, fn, scale in (("floor_matmul", floor, 1), ("devise_rank_topk", ours, 1),
                            ("gensim_most_similar", gensim_loop, args.queries / args.gensim_sample)):
        seconds = timed(fn, args.repeats) * scale
        results[name] = seconds
        print(json.dumps({"benchmark": "rank", "method": name, "queries": args.queries, "vocabulary": len(kv),
                          "k": 10, "seconds_median": round(seconds, 3), "threads": torch.get_num_threads()}))
    sample_queries = queries[:500]
    brute = sample_queries @ vocabulary.T
    scores, index = rank_topk(sample_queries, vocabulary, 10, normalized=True)
    best = brute.topk(10, dim=1).values
    exact = torch.allclose(brute.gather(1, index), best, atol=1e-6) and torch.allclose(scores, best, atol=1e-6)
    print(json.dumps({"benchmark": "rank", "exact_on_sample": exact, "speedup_vs_gensim": round(results["gensim_most_similar"] / results["devise_rank_topk"], 1),
                      "ratio_to_floor": round(results["devise_rank_topk"] / results["floor_matmul"], 2)}))


if __name__ == "__main__":
    main()
