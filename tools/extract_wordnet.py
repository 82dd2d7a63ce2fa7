"""Extract WordNet 3.0's noun hierarchy into the compact files devise ships.

Reads Debian's `wordnet-base` (/usr/share/wordnet/; `apt-get install wordnet-base`) and writes
src/devise/labels/wordnet_nouns.tsv.gz: one line per noun synset, `wnid<TAB>names<TAB>hypernyms`, the wnid
as ImageNet writes it ("n" and the 8-digit offset), the names its lemmas (comma-separated,
underscores as spaces, as in ImageNet's words.txt), the hypernyms (class and instance) as wnids;
and src/devise/labels/wordnet_senses.tsv.gz: `lemma<TAB>wnid` of each noun lemma's most frequent sense
(the first synset index.noun lists), by which a plain word ("lemon") finds its place.
WordNet's licence allows redistribution with its notice: src/devise/labels/WORDNET_LICENSE.
Usage: python tools/extract_wordnet.py [/usr/share/wordnet]
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "devise" / "labels"
OUT, SENSES = PACKAGE / "wordnet_nouns.tsv.gz", PACKAGE / "wordnet_senses.tsv.gz"


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


def first_senses(index_noun: Path):
    """(lemma, wnid of its most frequent noun sense) of every lemma in a WordNet index.noun file."""
    with open(index_noun, encoding="latin-1") as handle:
        for line in handle:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split()
            pointers = int(fields[3])
            yield fields[0].replace("_", " "), f"n{fields[4 + pointers + 2]}"


def write(path: Path, lines: list[str], what: str) -> None:
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as handle:
        handle.writelines(lines)
    print(f"{len(lines)} {what} -> {path} ({path.stat().st_size:,} bytes)")


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/wordnet")
    write(OUT, [f"{wnid}\t{', '.join(names)}\t{' '.join(hypernyms)}\n"
                for wnid, names, hypernyms in synsets(source / "data.noun")], "noun synsets")
    write(SENSES, [f"{lemma}\t{wnid}\n" for lemma, wnid in first_senses(source / "index.noun")], "noun lemmas")


if __name__ == "__main__":
    main()
