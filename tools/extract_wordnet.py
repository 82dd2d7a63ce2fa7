"""Extract WordNet 3.0's noun hierarchy into the compact files devise ships.

Reads Debian's `wordnet-base` (/usr/share/wordnet/; `apt-get install wordnet-base`) and writes
src/devise/labels/wordnet_nouns.tsv.gz: one line per noun synset, `wnid<TAB>names<TAB>hypernyms`, the wnid
as ImageNet writes it ("n" and the 8-digit offset), the names its lemmas (comma-separated,
underscores as spaces, as in ImageNet's words.txt), the hypernyms (class and instance) as wnids;
and src/devise/labels/wordnet_senses.tsv.gz: `lemma<TAB>wnid<TAB>noun` of each noun lemma's most
frequent sense (the first synset index.noun lists), by which a plain word ("lemon") finds its place,
and 1 in `noun` when English reads the lemma mainly as a noun (`mainly_noun`), 0 when it is one
only by a rare sense ("young", "ii", "in": indium): what a vocabulary's `words:N` keeps.
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


# Closed-class words: WordNet has no pronouns, determiners, prepositions, conjunctions or auxiliaries,
# so its noun senses of them (abbreviations, chemical symbols: "he", "at", "who") are all it knows.
CLOSED_CLASS = """
a an the i me my mine we us our ours you your yours he him his she her hers it its they them their theirs
who whom whose which what that this these those there here where when why how all any both each either
neither every some no none not nor or and but if so as at by for from in into of off on onto out over per
than then to too up upon via with within without about above after against along among amid around before
behind below beneath beside between beyond down during except inside near since through throughout till
toward towards under until unlike while whilst despite whether though although because unless whereas
am is are was were be been being do does did done have has had having will would shall should can could
may might must ought also yet just very"""
FUNCTION_WORDS = frozenset(CLOSED_CLASS.split())

# SemCor tag counts by the synset type of a sense key ("lemma%1:..."): 1 noun, 2 verb, 3 adjective,
# 4 adverb, 5 adjective satellite.
NOUN, VERB, ADJECTIVE, ADVERB, SATELLITE = "1", "2", "3", "4", "5"


def tag_counts(cntlist: Path) -> dict[str, dict[str, int]]:
    """How often each lemma's senses of each synset type were tagged in SemCor (cntlist.rev)."""
    counts: dict[str, dict[str, int]] = {}
    with open(cntlist, encoding="latin-1") as handle:
        for line in handle:
            key, _, count = line.split()
            lemma, _, sense = key.partition("%")
            by_type = counts.setdefault(lemma.replace("_", " ").lower(), {})
            by_type[sense[0]] = by_type.get(sense[0], 0) + int(count)
    return counts


def lemmas(index: Path) -> set[str]:
    """Every lemma of a WordNet index file (index.verb, index.adj, ...)."""
    with open(index, encoding="latin-1") as handle:
        return {line.split()[0].replace("_", " ") for line in handle if not line.startswith("  ")}


def mainly_noun(lemma: str, counts: dict[str, int], modifier: bool) -> bool:
    """Whether English reads a noun lemma mainly as a noun, by its senses' SemCor tags: not a
    function word; its verb senses tagged under ten times as often as its noun senses, or under ten
    times at all ("plan", "judge", "crane" stay; "make", "see" go); and when it is an adjective or
    adverb too, its noun senses tagged at all and at least as often ("young", "first", "in" go, and
    so do words tagged under no sense: "ii", two, and nationalities)."""
    if lemma in FUNCTION_WORDS:
        return False
    noun, verb = counts.get(NOUN, 0), counts.get(VERB, 0)
    modifiers = max(counts.get(ADJECTIVE, 0) + counts.get(SATELLITE, 0), counts.get(ADVERB, 0))
    return verb < 10 * max(noun, 1) and (not modifier or 0 < noun >= modifiers)


def noun_flags(source: Path) -> dict[str, bool]:
    """`mainly_noun` of every noun lemma of the WordNet files in `source`."""
    counts = tag_counts(source / "cntlist.rev")
    modifiers = lemmas(source / "index.adj") | lemmas(source / "index.adv")
    return {lemma: mainly_noun(lemma, counts.get(lemma, {}), lemma in modifiers)
            for lemma in lemmas(source / "index.noun")}


def write(path: Path, lines: list[str], what: str) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as handle:
        handle.write("".join(lines).encode("utf-8"))  # no time stamp: the same WordNet gives the same bytes
    print(f"{len(lines)} {what} -> {path} ({path.stat().st_size:,} bytes)")


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/wordnet")
    write(OUT, [f"{wnid}\t{', '.join(names)}\t{' '.join(hypernyms)}\n"
                for wnid, names, hypernyms in synsets(source / "data.noun")], "noun synsets")
    nouns = noun_flags(source)
    write(SENSES, [f"{lemma}\t{wnid}\t{int(nouns[lemma])}\n" for lemma, wnid in first_senses(source / "index.noun")],
          "noun lemmas")


if __name__ == "__main__":
    main()
