"""A run's labels: its label space, synonym rule and replacements, its training labels' own vectors
and the centre it takes off every other label (`--centre-labels`). Every label a run reads later
(held-out classes, vocabularies, an exported model's text) goes through here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from devise.config import DEFAULT_RULE
from devise.errors import DeviseError
from devise.labels.sources import MINILM, one_line
from devise.labels.spaces import LabelSpace, RandomSpace, load_label_space, space_name


def read_replacements(path: str | Path) -> dict[str, str]:
    """Read `label<TAB>replacement words` (or `label = replacement words`) lines.

    Blank lines and lines starting with '#' are skipped. This is how a user gives a vector to a
    label the vectors do not know, without renaming the dataset's classes.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise DeviseError(f"replacements file not found: {file}")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DeviseError(f"replacements file {file} is not UTF-8 text: {one_line(error)}") from error
    replacements: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        separator = "\t" if "\t" in line else "="
        label, _, words = line.partition(separator)
        label, words = label.strip(), words.strip()
        if separator not in line or not label or not words:
            raise DeviseError(f"{file} line {number}: expected 'label<TAB>words' or 'label = words', "
                              f"got {line.strip()!r}")
        if label in replacements:
            raise DeviseError(f"{file} line {number}: label {label!r} is replaced twice")
        replacements[label] = words
    return replacements


@dataclass
class RunLabels:
    """How any label becomes a vector for one run: the run's label space, synonym rule and
    replacements, and for its training labels the vectors it was trained on."""

    space: LabelSpace | RandomSpace
    rule: str = DEFAULT_RULE
    replacements: dict[str, str] | None = None
    known: dict[str, torch.Tensor] = field(default_factory=dict)
    centre: torch.Tensor | None = None  # taken off every new label's vector (`--centre-labels`)

    @property
    def name(self) -> str:
        return self.space.name + ("+centred" if self.centre is not None else "")

    @property
    def dim(self) -> int:
        return self.space.dim

    def embed(self, labels: list[str], ids: list[str | None] | None = None) -> torch.Tensor:
        """Unit vectors of `labels`, in order; known labels as trained, the others by the rules
        (`ids`: the labels' WordNet ids where known, which hypernym prompts read)."""
        id_of = dict(zip(labels, ids)) if ids else {}
        new = [label for label in dict.fromkeys(labels) if label not in self.known]
        new_ids = [id_of.get(label) for label in new]
        made = dict(zip(new, self.centred(self.space.embed(new, self.rule, self.replacements, new_ids)))) if new else {}
        if not labels:
            return torch.zeros(0, self.dim)
        return torch.stack([self.known[label] if label in self.known else made[label] for label in labels])

    def available(self, labels: list[str]) -> list[bool]:
        """Which labels have a vector here (a training label always has one)."""
        unknown = [label for label in labels if label not in self.known]
        found = dict(zip(unknown, self.space.available(unknown, self.rule, self.replacements)))
        return [label in self.known or found[label] for label in labels]

    def vocabulary_words(self, n: int) -> list[str]:
        return self.space.vocabulary_words(n)

    def embed_words(self, words: list[str]) -> torch.Tensor:
        return self.centred(self.space.embed_words(words))

    def centred(self, vectors: torch.Tensor) -> torch.Tensor:
        """Label vectors as the run reads them: less its centre, if it has one, then unit length."""
        return vectors if self.centre is None else F.normalize(vectors - self.centre, dim=1)


def read_replacements_files(*paths: str | None) -> dict[str, str] | None:
    """The replacements of several files, later files winning; files that are not there are
    skipped (a run's own file may be gone: then the flag names the fix)."""
    merged: dict[str, str] = {}
    for path in paths:
        if path and Path(path).expanduser().is_file():
            merged.update(read_replacements(path))
    return merged or None


def run_space_name(config) -> str:
    """The name of a run's label space, from its settings alone (nothing is loaded)."""
    name = "random" if config.random_vectors else space_name(config.vectors, config.vectors_path,
                                                             getattr(config, "prompts", None))
    return name + ("+centred" if getattr(config, "centre_labels", False) else "")


def run_replacements(config, replacements: str | None = None) -> dict[str, str]:
    """A run's replacements: its own file's, then a `replacements` file of the caller's, which wins."""
    extra = read_replacements(replacements) if replacements else {}
    return {**(read_replacements_files(config.replacements) or {}), **extra}


def run_labels(*, source: str, path: str | None = None, rule: str = DEFAULT_RULE, prompts=None,
               random_vectors: bool = False, seed: int = 0, replacements: dict[str, str] | None = None,
               known: dict[str, torch.Tensor] | None = None, centre: torch.Tensor | None = None) -> RunLabels:
    """How a model reads any label: its label space (`source`, a vectors file's `path`, `prompts`
    for a sentence space, or the random-vector control), synonym rule and replacements, its training
    labels' own vectors (`known`) and the centre it takes off every other label's vector."""
    if random_vectors:
        dim = next(iter(known.values())).shape[0] if known else load_label_space(source, path).dim
        return RunLabels(RandomSpace(dim, seed), rule, replacements, dict(known or {}), centre)
    return RunLabels(load_label_space(source, path, prompts if source == MINILM else None), rule, replacements,
                     dict(known or {}), centre)


def label_space_for(config, known: dict[str, torch.Tensor] | None = None, replacements: str | None = None,
                    vectors: str | None = None, centre: torch.Tensor | None = None) -> RunLabels:
    """A run's labels (`run_labels`) from its settings: `config`'s source, rule and replacements
    file (plus a `replacements` file of the caller's, which wins). For a softmax run, which has no
    space of its own, `vectors` names the one to use."""
    source, path = (vectors, None) if vectors else (config.vectors, config.vectors_path)
    return run_labels(source=source, path=path, rule=config.label_rule, prompts=config.prompts,
                      random_vectors=config.random_vectors, seed=config.seed,
                      replacements=run_replacements(config, replacements) or None, known=known, centre=centre)


def training_label_vectors(config, class_names: list[str],
                           class_ids: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The unit vectors a new embedding run trains towards, one per class: the label space's
    (`class_ids`: their WordNet ids, for hypernym prompts), or for the control `RandomSpace`'s, the
    same that any later label of the run gets; and the centre, with `--centre-labels`.

    The centre is the mean of the training labels' vectors. Every label in a sentence space shares
    a direction ("a photo of a ..."), so that unrelated labels sit at cosines near 0.4 and a
    prediction near that direction is near every label; taken off, cosines measure what tells
    labels apart. The run keeps it and takes it off every label it reads later."""
    vectors = label_space_for(config).embed(class_names, class_ids)
    if not config.centre_labels:
        return vectors, None
    centre = vectors.mean(dim=0)
    return F.normalize(vectors - centre, dim=1), centre
