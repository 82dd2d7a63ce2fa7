"""How long a MiniLM model takes to read N new candidate words the first time (the cpu preset's
hypernym prompts, an empty phrase cache) and the second (cached): `python benchmarks/minilm_words.py 2000`."""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("words", type=int, help="how many of the packaged GloVe's most frequent nouns")
    count = parser.parse_args().words
    os.environ["DEVISE_CACHE"] = tempfile.mkdtemp()  # an empty phrase cache, before devise reads it
    from devise.labels.sources import PACKAGED_GLOVE
    from devise.labels.spaces import load_label_space

    words = load_label_space(PACKAGED_GLOVE).vocabulary_words(count)
    space = load_label_space("minilm", prompts="hypernym")
    start = time.perf_counter()
    space.embed(words)
    first = time.perf_counter() - start
    start = time.perf_counter()
    space.embed(words)
    print(f"{count} nouns: first {first:.1f} s ({count / first:.1f} words/s), again {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
