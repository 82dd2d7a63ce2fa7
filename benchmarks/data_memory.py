"""Data and memory: Tiny ImageNet's first decode, its cached load, and a training run's peak memory.

(a) first decode: both splits from the zip into a fresh, temporary cache (110,000 JPEGs);
(b) cached load: both splits again from that cache, median of several loads, and the same
    with the resize to the training size that `devise train` does;
(c) peak memory: `devise train` for one epoch in a child process (the preset's model on the
    real data), its maximum resident set size as the operating system reports it.
Prints one JSON line per result. Targets (issue 5): cached load under 1 s, training peak under 4 GiB.
Usage: python benchmarks/data_memory.py --data-root ../shared/data [--preset cpu] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devise.data import load_dataset


def seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def load_both_splits(data_root: str, cache_dir: str, image_size: int | None = None) -> None:
    for split in ("train", "val"):
        load_dataset("tiny-imagenet", data_root, split, image_size=image_size, cache_dir=cache_dir, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--preset", default="cpu", help="preset whose model trains for the memory figure")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        cache = str(Path(scratch) / "cache")
        first = seconds(lambda: load_both_splits(args.data_root, cache))
        print(json.dumps({"benchmark": "data", "step": "first decode, both splits, from the zip or folder",
                          "seconds": round(first, 1)}))
        for size in (None, 32):
            loads = [seconds(lambda: load_both_splits(args.data_root, cache, size)) for _ in range(args.repeats)]
            print(json.dumps({"benchmark": "data", "step": "cached load, both splits",
                              "image_size": size or 64, "seconds_median": round(statistics.median(loads), 4),
                              "seconds_all": [round(s, 4) for s in loads]}))
        command = [sys.executable, "-m", "devise", "train", "--preset", args.preset, "--data-root", args.data_root,
                   "--cache-dir", cache, "--epochs", str(args.epochs), "--out", str(Path(scratch) / "run"), "--quiet"]
        took = seconds(lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL))
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
        print(json.dumps({"benchmark": "memory", "step": f"devise train --preset {args.preset}, {args.epochs} epoch(s)",
                          "peak_resident_gib": round(peak_gib, 2), "seconds": round(took, 1)}))


if __name__ == "__main__":
    main()
