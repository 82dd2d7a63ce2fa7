"""Rank 10,000 query vectors against all 400,000 GloVe words, top-10, several ways, in one run.

(a) devise.model.topk.rank_topk as it chooses on this host (a screen of group maxima in bf16 where bf16
is native, float32 elsewhere, then exact float32 rescoring of the candidate groups), and each
screen forced, (b) devise.model.topk.exact_topk (float32 blocks with a running top k), (c) gensim's
KeyedVectors.most_similar called once per vector (timed on a sample of queries and scaled up),
(d) the floor: the float32 matrix multiplies without any top-k. Contenders alternate (A/B/C/A/B/C);
prints one JSON line per result with the host, the ratios, and whether (a) agrees with a
brute-force float32 top-k on the first 500 queries. The forced bf16 screen is left out where bf16
is not native (it would take minutes).
gensim is not one of devise's dependencies: install it for (c).
Usage: pip install gensim && python benchmarks/rank.py [--queries 10000] [--gensim-sample 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from devise.hardware import bf16_native, describe_host, host_line
from devise.labels.sources import load_word_vectors
from devise.model.topk import exact_topk, rank_topk


def timed_in_rounds(contenders: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each contender, run A/B/C/A/B/C so that drift hits them alike."""
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def gensim_vectors(kv):
    """The same words and vectors as gensim's `KeyedVectors`, for its `most_similar`."""
    from gensim.models import KeyedVectors

    gensim_kv = KeyedVectors(vector_size=kv.vector_size)
    gensim_kv.add_vectors(kv.index_to_key, kv.vectors)
    return gensim_kv


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

    sample = queries[: args.gensim_sample].numpy()
    gensim_kv = gensim_vectors(kv)

    def gensim_loop() -> None:
        for vector in sample:
            gensim_kv.most_similar(positive=[vector], topn=10)

    contenders = {
        "floor_matmul": floor,
        "devise_rank_topk": lambda: rank_topk(queries, vocabulary, 10, normalized=True),
        "float32_screen": lambda: rank_topk(queries, vocabulary, 10, normalized=True, screen=torch.float32),
        "exact_topk": lambda: exact_topk(queries, vocabulary, 10, 16384, 2**22, 64),
    }
    if bf16_native(torch.device("cpu")):
        contenders["bf16_screen"] = lambda: rank_topk(queries, vocabulary, 10, normalized=True, screen=torch.bfloat16)
    results = timed_in_rounds(contenders, args.repeats)
    results["gensim_most_similar"] = timed_in_rounds({"gensim": gensim_loop}, 1)["gensim"] * args.queries / args.gensim_sample
    host = host_line(describe_host())
    for name, seconds in results.items():
        print(json.dumps({"benchmark": "rank", "method": name, "queries": args.queries, "vocabulary": len(kv),
                          "k": 10, "seconds_median": round(seconds, 3), "threads": torch.get_num_threads(),
                          "host": host}))
    sample_queries = queries[:500]
    brute = sample_queries @ vocabulary.T
    scores, index = rank_topk(sample_queries, vocabulary, 10, normalized=True)
    best = brute.topk(10, dim=1).values
    exact = torch.allclose(brute.gather(1, index), best, atol=1e-6) and torch.allclose(scores, best, atol=1e-6)
    print(json.dumps({"benchmark": "rank", "exact_on_sample": exact, "speedup_vs_gensim": round(results["gensim_most_similar"] / results["devise_rank_topk"], 1),
                      "ratio_to_floor": round(results["devise_rank_topk"] / results["floor_matmul"], 2)}))


if __name__ == "__main__":
    main()
