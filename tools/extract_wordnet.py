"""Extract WordNet 3.0's noun hierarchy into the compact file devise ships.

Reads Debian's `wordnet-base` (/usr/share/wordnet/data.noun; `apt-get install wordnet-base`) and
writes src/devise/wordnet_nouns.tsv.gz: one line per noun synset, `wnid<TAB>names<TAB>hypernyms`,
the wnid as ImageNet writes it ("n" and the 8-digit offset), the names its lemmas (comma-separated,
underscores as spaces, as in ImageNet's words.txt), the hypernyms (class and instance) as wnids.
WordNet's licence allows redistribution with its notice: src/devise/WORDNET_LICENSE.
Usage: python tools/extract_wordnet.py [/usr/share/wordnet/data.noun]
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "devise" / "wordnet_nouns.tsv.gz"


def synsets(data_noun: Path):
    """(wnid, names, hypernym wnids) of every noun synset in a WordNet data.noun file."""
    with open(data_noun, encoding="latin-1") as handle:
        for line in handle:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" | ")[0].split()
            offset, words = fields[0], int(fields[3], 16)
            names = [fields[4 + 2 * i].replace("_", " ") for i in range(words)]
            names = [name[: name.index("(")] if name.endswith(")") and "(" in name else name for name in names]  # "(a)" markers
            at = 4 + 2 * words
            pointers = int(fields[at])
            hypernyms = [f"n{fields[at + 2 + 4 * p]}" for p in range(pointers)
                         if fields[at + 1 + 4 * p] in ("@", "@i") and fields[at + 3 + 4 * p] == "n"]
            yield f"n{offset}", names, hypernyms


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/wordnet/data.noun")
    lines = [f"{wnid}\t{', '.join(names)}\t{' '.join(hypernyms)}\n" for wnid, names, hypernyms in synsets(source)]
    with gzip.open(OUT, "wt", encoding="utf-8", compresslevel=9) as handle:
        handle.writelines(lines)
    print(f"{len(lines)} noun synsets -> {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
