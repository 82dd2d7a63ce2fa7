"""Zero-shot evaluation: name images of classes the models never trained on.

Three kinds of model are compared on the same target images:

- DeViSE (an embedding run): its predicted vector is ranked against a vocabulary by cosine;
- ConSE (Norouzi et al. 2014), built from a softmax run: the probability-weighted mean of the
  vectors of its top-T training labels, ranked the same way;
- the softmax model itself, which can only name its own training labels.

Metrics: hit@k over the target's labels, per-class mean top-1, and the paper's semantic
similarity (mean cosine between the true label's vector and each of the top-3 predictions) with
its control (random target/training label pairs) and the lift over that control.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from devise.data import ImageSet
from devise.errors import DeviseError
from devise.rank import rank_topk
from devise.vectors import DEFAULT_RULE, LabelSpace

ZERO_SHOT_KS = (1, 2, 5, 10, 20)
SIMILARITY_TOP = 3


@dataclass
class Vocabulary:
    """Candidate labels and their unit vectors; `sources` says what it was built from."""

    labels: list[str]
    vectors: torch.Tensor
    sources: str

    def __len__(self) -> int:
        return len(self.labels)

    def positions(self, labels: list[str]) -> torch.Tensor:
        """For each label, its index in this vocabulary, or -1."""
        where = {label: i for i, label in enumerate(self.labels)}
        return torch.tensor([where.get(label, -1) for label in labels], dtype=torch.int64)


def build_vocabulary(space: LabelSpace, label_sets: dict[str, list[str]], spec: str = "target,train",
                     rule: str = DEFAULT_RULE, replacements: dict[str, str] | None = None) -> Vocabulary:
    """A vocabulary from a comma-separated spec, in order, without duplicates.

    Parts: a key of `label_sets` ("target", "train"), `words:N` (the N most frequent plain words of
    the vector source) or `file:PATH` (one word or phrase per line).
    """
    labels: list[str] = []
    vectors: list[torch.Tensor] = []
    seen: set[str] = set()

    def add(new_labels: list[str], new_vectors: torch.Tensor) -> None:
        for label, vector in zip(new_labels, new_vectors):
            if label not in seen:
                seen.add(label)
                labels.append(label)
                vectors.append(vector)

    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        kind, _, value = part.partition(":")
        if kind in label_sets and not value:
            add(label_sets[kind], space.embed(label_sets[kind], rule, replacements))
        elif kind == "words":
            if not value.isdigit() or int(value) <= 0:
                raise DeviseError(f"vocabulary part {part!r}: use words:N with N a positive number")
            words = [w for w in space.vocabulary_words(int(value)) if w not in seen]
            add(words, space.embed_words(words))
        elif kind == "file":
            path = Path(value)
            if not path.is_file():
                raise DeviseError(f"vocabulary file {path} does not exist")
            phrases = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
            add(phrases, space.embed(phrases, rule, replacements))
        else:
            names = ", ".join([*label_sets, "words:N", "file:PATH"])
            raise DeviseError(f"unknown vocabulary part {part!r}; use a comma list of {names}")
    if not labels:
        raise DeviseError(f"vocabulary {spec!r} is empty")
    return Vocabulary(labels, torch.stack(vectors), spec)


def conse_vectors(logits: torch.Tensor, label_vectors: torch.Tensor, top: int = 10) -> torch.Tensor:
    """ConSE: sum over the T most probable training labels of p(label) * vector, normalised.

    Dividing by the sum of those T probabilities (Norouzi et al.'s Z) does not change the
    direction, so the unit result is the same either way.
    """
    probabilities = logits.float().softmax(dim=1)
    p, index = probabilities.topk(min(top, probabilities.shape[1]), dim=1)
    return F.normalize((p[:, :, None] * label_vectors[index]).sum(dim=1), dim=1)


def semantic_similarity(true_vectors: torch.Tensor, predicted_vectors: torch.Tensor) -> torch.Tensor:
    """Per image: mean cosine between its true label's vector (N x D) and each of its top
    predictions' vectors (N x P x D). The paper's metric uses P = 3."""
    return (predicted_vectors * true_vectors[:, None, :]).sum(dim=2).mean(dim=1)


def similarity_control(target_vectors: torch.Tensor, training_vectors: torch.Tensor, pairs: int = 10_000,
                       seed: int = 0) -> float:
    """Mean cosine of random (target label, training label) pairs: what guessing scores."""
    generator = torch.Generator().manual_seed(seed)
    i = torch.randint(0, target_vectors.shape[0], (pairs,), generator=generator)
    j = torch.randint(0, training_vectors.shape[0], (pairs,), generator=generator)
    return float((target_vectors[i] * training_vectors[j]).sum(dim=1).mean())


def ranking_metrics(top_index: torch.Tensor, candidates: Vocabulary, true_labels: list[str], labels: torch.Tensor,
                    true_vectors: torch.Tensor, ks: tuple[int, ...] = ZERO_SHOT_KS) -> dict[str, float]:
    """hit@k, per-class mean top-1 and semantic similarity of a ranking of `candidates`.

    `top_index` (N x k) holds each image's best candidates, best first; `labels` (N) indexes
    `true_labels`, whose vectors are `true_vectors` (one row per image).
    """
    truth = candidates.positions(true_labels)[labels]  # candidate index of each image's true label, or -1
    hits = (top_index == truth[:, None]) & (truth[:, None] >= 0)
    found = hits.cumsum(dim=1).clamp(max=1).float()
    result = {f"hit@{k}": float(found[:, min(k, found.shape[1]) - 1].mean()) for k in ks}
    per_class = [float(found[labels == c, 0].mean()) for c in labels.unique()]
    result["per_class_top1"] = sum(per_class) / len(per_class)
    top = top_index[:, :SIMILARITY_TOP]
    result["similarity"] = float(semantic_similarity(true_vectors, candidates.vectors[top]).mean())
    return result


def rank_vectors(predicted: torch.Tensor, candidates: Vocabulary, k: int) -> torch.Tensor:
    return rank_topk(predicted, candidates.vectors, k)[1]


def rank_softmax(logits: torch.Tensor, k: int) -> torch.Tensor:
    return logits.float().topk(min(k, logits.shape[1]), dim=1).indices


def harmonic_mean(seen: float, unseen: float) -> float:
    return 2 * seen * unseen / (seen + unseen) if seen + unseen > 0 else 0.0


@dataclass
class ZeroShotModel:
    """One model under test: its name, kind ("DeViSE", "ConSE" or "softmax") and its run."""

    name: str
    kind: str
    run: object  # devise.train.Run


def models_from_runs(runs: list, conse_top: int = 10) -> list[ZeroShotModel]:
    """An embedding run is a DeViSE model; a softmax run gives both ConSE and itself."""
    models = []
    for run in runs:
        label = run.folder.name
        if run.config.head == "embedding":
            models.append(ZeroShotModel(f"DeViSE ({label})", "DeViSE", run))
        else:
            models.append(ZeroShotModel(f"ConSE T={conse_top} ({label})", "ConSE", run))
            models.append(ZeroShotModel(f"softmax ({label})", "softmax", run))
    return models


def label_space_of(runs: list, vectors: str | None = None, vectors_path: str | None = None) -> LabelSpace:
    """The space every model is compared in: the embedding runs' own (they must agree), else
    `vectors`, else the default GloVe 50-d."""
    from devise.vectors import load_label_space

    spaces = {(r.config.vectors, r.config.vectors_path) for r in runs if r.config.head == "embedding"}
    if len(spaces) > 1:
        raise DeviseError("the embedding runs use different label spaces; compare them in separate calls")
    if spaces:
        source, path = spaces.pop()
        if vectors and (vectors, vectors_path) != (source, path):
            raise DeviseError(f"--vectors {vectors} differs from the embedding run's label space {source}")
        return load_label_space(source, path)
    return load_label_space(vectors or "glove-6b-50d", vectors_path)


def evaluate_zero_shot(models: list[ZeroShotModel], target: ImageSet, space: LabelSpace, vocabulary_spec: str,
                       outputs: dict[str, torch.Tensor], rule: str = DEFAULT_RULE, replacements: dict | None = None,
                       conse_top: int = 10, gzsl: tuple[ImageSet, dict[str, torch.Tensor], list[str]] | None = None,
                       examples: list[int] = ()) -> dict:
    """Every zero-shot metric for every model on one target set.

    `outputs[name]` holds the model's raw outputs on `target.images` (logits or unit vectors).
    For the images indexed by `examples`, each model's top-5 with each label's similarity to the
    true label goes into `results["examples"]` (the side-by-side figure).
    With `gzsl` = (all images of the dataset, the models' outputs on them, the seen class ids),
    for a held-out split of the training dataset, the generalised zero-shot figures S, U and H
    are added: top-1 over all labels on seen-class and on unseen-class images.
    """
    target_vectors = space.embed(target.class_names, rule, replacements)
    true_vectors = target_vectors[target.labels]
    target_vocabulary = Vocabulary(target.class_names, target_vectors, "target")
    results: dict = {"target": target.name, "images": len(target), "target_classes": target.num_classes,
                     "label_space": space.name, "vocabulary": vocabulary_spec, "models": {},
                     "examples": {"index": list(examples), "true": [target.class_names[target.labels[i]] for i in examples],
                                  "predictions": {}}}
    control = None
    embedded: dict[tuple[str, ...], torch.Tensor] = {}  # ConSE and softmax of one run share labels
    k = max(ZERO_SHOT_KS)
    for model in models:
        training_labels = model.run.class_names
        key = tuple(training_labels)
        if key not in embedded:
            embedded[key] = space.embed(training_labels, rule, replacements)
        training_vectors = embedded[key]
        if control is None:
            control = similarity_control(target_vectors, training_vectors)
        predicted = predicted_vectors(model, outputs[model.name], training_vectors, conse_top)
        if predicted is None:  # softmax: ranks only its own training labels, whatever the vocabulary
            vocabulary = Vocabulary(training_labels, training_vectors, "train")
            top = top_vocabulary = rank_softmax(outputs[model.name], k)
            over_target = over_vocabulary = ranking_metrics(top, vocabulary, target.class_names, target.labels,
                                                            true_vectors)
        else:
            vocabulary = build_vocabulary(space, {"target": target.class_names, "train": training_labels},
                                          vocabulary_spec, rule, replacements)
            top = rank_vectors(predicted, target_vocabulary, k)
            over_target = ranking_metrics(top, target_vocabulary, target.class_names, target.labels, true_vectors)
            top_vocabulary = rank_vectors(predicted, vocabulary, k)
            over_vocabulary = ranking_metrics(top_vocabulary, vocabulary, target.class_names, target.labels,
                                              true_vectors)
        results["examples"]["predictions"][model.name] = [
            [(vocabulary.labels[j], float(vocabulary.vectors[j] @ true_vectors[i])) for j in top_vocabulary[i, :5].tolist()]
            for i in examples]
        entry = {"kind": model.kind, **{key: over_target[key] for key in over_target if key != "similarity"},
                 "similarity": over_vocabulary["similarity"],
                 "lift": over_vocabulary["similarity"] - control,
                 "vocabulary_size": len(vocabulary),
                 **{f"vocabulary_{key}": over_vocabulary[key] for key in over_vocabulary if key.startswith("hit@")}}
        if gzsl is not None:
            everything, all_outputs, seen_ids = gzsl
            all_predicted = predicted_vectors(model, all_outputs[model.name], training_vectors, conse_top)
            entry.update(generalised_zero_shot(everything, space, all_outputs[model.name], all_predicted,
                                               training_labels, seen_ids, rule, replacements))
        results["models"][model.name] = entry
    results["control_similarity"] = control
    return results


def predicted_vectors(model: ZeroShotModel, outputs: torch.Tensor, training_vectors: torch.Tensor,
                      conse_top: int) -> torch.Tensor | None:
    if model.kind == "DeViSE":
        return F.normalize(outputs.float(), dim=1)
    if model.kind == "ConSE":
        return conse_vectors(outputs, training_vectors, conse_top)
    return None


def generalised_zero_shot(target: ImageSet, space: LabelSpace, outputs: torch.Tensor,
                          predicted: torch.Tensor | None, training_labels: list[str], seen_ids: list[str],
                          rule: str, replacements: dict | None) -> dict[str, float]:
    """S, U and H: top-1 over all the dataset's labels, on seen-class and on unseen-class images."""
    is_seen_class = torch.tensor([c in set(seen_ids) for c in target.class_ids])
    image_seen = is_seen_class[target.labels]
    if predicted is None:
        named = [training_labels[i] for i in rank_softmax(outputs, 1)[:, 0].tolist()]
    else:
        everything = Vocabulary(target.class_names, space.embed(target.class_names, rule, replacements), "all")
        named = [everything.labels[i] for i in rank_vectors(predicted, everything, 1)[:, 0].tolist()]
    correct = torch.tensor([name == target.class_names[y] for name, y in zip(named, target.labels.tolist())])

    def per_class_accuracy(mask: torch.Tensor) -> float:
        classes = target.labels[mask].unique()
        if len(classes) == 0:
            return 0.0
        return float(torch.stack([correct[mask & (target.labels == c)].float().mean() for c in classes]).mean())

    seen, unseen = per_class_accuracy(image_seen), per_class_accuracy(~image_seen)
    return {"gzsl_seen": seen, "gzsl_unseen": unseen, "gzsl_harmonic": harmonic_mean(seen, unseen)}


def load_target(kind: str, root: str | None, runs: list, image_size: int, progress: bool = True,
                download: bool = False):
    """The target images, and for a held-out split also (all images, seen class ids).

    `kind` is "unseen" (the classes the runs held out of training with --unseen), or a dataset
    name: "cifar100" (its test split), "folder", "tiny-imagenet" (its val split), "toy".
    """
    from devise.data import load_dataset
    from devise.data.splits import keep_classes, seen_classes
    from devise.train import unseen_classes

    if kind != "unseen":
        split = {"cifar100": "test", "tiny-imagenet": "val", "toy": "test"}.get(kind)
        return load_dataset(kind, root, split, image_size, download=download, progress=progress), None
    settings = {(r.config.data, r.config.unseen, r.config.unseen_seed) for r in runs}
    if len(settings) != 1 or next(iter(settings))[1] == 0:
        raise DeviseError("--target unseen needs runs trained with the same --unseen K and --unseen-seed")
    config = runs[0].config
    everything = load_dataset(config.data, root or config.data_root, config.val_split, image_size,
                              config.cache_dir, config.download, progress)
    unseen = unseen_classes(config, everything)
    return keep_classes(everything, unseen), (everything, seen_classes(everything, unseen))


def run_zero_shot(run_folders: list[str | Path], target: str, target_root: str | None = None,
                  vocabulary: str = "target,train", vectors: str | None = None, conse_top: int = 10,
                  out: str | Path | None = None, examples: int | list[int] = 6, seed: int = 0, progress: bool = True,
                  download: bool = False, device: str = "auto") -> dict:
    """Load runs, run them on the target images, compute every metric, and write into `out`
    (default: `<first run>/zeroshot-<target>`): `zeroshot.json`, the similarity bar chart and
    the side-by-side top-5 figure of `examples` images: that many drawn with `seed`, or a list of
    chosen image indices into the target set. The models run on `device`."""
    import json

    from devise.evaluation import model_outputs
    from devise.plots import plot_examples, plot_similarity
    from devise.train import load_run

    runs = [load_run(folder, device) for folder in run_folders]
    sizes = {r.config.image_size for r in runs}
    if len(sizes) != 1:
        raise DeviseError("the runs were trained at different image sizes; evaluate them separately")
    targets, gzsl_all = load_target(target, target_root, runs, sizes.pop(), progress, download)
    models = models_from_runs(runs, conse_top)
    space = label_space_of(runs, vectors)
    source = gzsl_all[0] if gzsl_all else targets
    raw = {run.folder: model_outputs(run, source, progress=progress) for run in runs}
    all_outputs = {m.name: raw[m.run.folder] for m in models}
    gzsl = None
    if gzsl_all:
        everything, seen_ids = gzsl_all
        unseen_mask = ~torch.tensor([c in set(seen_ids) for c in everything.class_ids])[everything.labels]
        outputs = {name: value[unseen_mask] for name, value in all_outputs.items()}
        gzsl = (everything, all_outputs, seen_ids)
    else:
        outputs = all_outputs
    chosen = choose_examples(examples, len(targets), seed)
    results = evaluate_zero_shot(models, targets, space, vocabulary, outputs, conse_top=conse_top, gzsl=gzsl,
                                 examples=chosen)
    results["target"] = target
    folder = Path(out) if out else Path(run_folders[0]) / f"zeroshot-{target}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zeroshot.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_similarity(results, folder / "similarity.png")
    if chosen:
        shown = results["examples"]
        plot_examples([targets.images[i] for i in chosen], shown["true"], shown["predictions"], folder / "examples.png")
    results["folder"] = str(folder)
    return results


def choose_examples(examples: int | list[int], count: int, seed: int) -> list[int]:
    """Image indices for the side-by-side figure: `examples` random ones, or the ones listed."""
    if isinstance(examples, int):
        return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:examples].tolist()
    wrong = [i for i in examples if not 0 <= i < count]
    if wrong:
        raise DeviseError(f"example image index {wrong[0]} is outside the target's {count} images")
    return list(examples)
