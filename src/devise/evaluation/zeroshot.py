"""Zero-shot evaluation: name images of classes the models never trained on, and write the figures.

DeViSE, ConSE and softmax (`devise.model.inference`) are run on the same target images and scored in one
label space: the embedding runs' own (read with their rules, their training labels as trained),
else `--vectors`. Metrics (`devise.evaluation.metrics`): hit@k over the target's labels and over a wider
vocabulary, per-class top-1, the paper's semantic similarity of the top 3 with its random-pair
control and the lift over it, and for a held-out split generalised zero-shot (S, U, H,
plain and with calibrated stacking, and AUSUC); hp@k where the labels are WordNet nouns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from devise.training.calibration import SPLITS, class_split_applies, class_split_constant
from devise.data import ImageSet, load_dataset
from devise.data.folder import folder_class_names
from devise.data.splits import keep_classes, seen_classes
from devise.errors import DeviseError
from devise.model.inference import CONSE_TOP, kind_of, model_outputs, query_vectors, top_labels
from devise.evaluation.metrics import HIERARCHY_KS, ZERO_SHOT_KS, generalised_figures, ranking_metrics, similarity_control
from devise.log import stage
from devise.model.pretrained import is_pretrained_name
from devise.training.runs import (Run, held, is_stock, load_model_run, read_calibration, read_unseen, run_split, stored_interpolation,
                         stored_size, write_zero_shot,
                         zero_shot_folder)
from devise.labels.run_labels import RunLabels
from devise.labels.vocabulary import Vocabulary, build_vocabulary, vectors_or_zeros
from devise.labels.wordnet import ranking_hierarchy, resolve_wnid


@dataclass
class ZeroShotModel:
    """One model under test: its name, kind ("DeViSE", "ConSE" or "softmax") and its run."""

    name: str
    kind: str
    run: Run


def models_from_runs(runs: list[Run], conse_top: int = CONSE_TOP) -> list[ZeroShotModel]:
    """An embedding run is a DeViSE model; a softmax run gives both ConSE and itself."""
    models = []
    for run in runs:
        label = run.folder.name
        if run.config.head == "embedding":
            models.append(ZeroShotModel(f"DeViSE ({label})", "DeViSE", run))
        else:
            models.append(ZeroShotModel(f"ConSE T={conse_top} ({label})", kind_of(run, conse=True), run))
            models.append(ZeroShotModel(f"softmax ({label})", "softmax", run))
    return models


def comparison_space(runs: list[Run], vectors: str | None = None, replacements: str | None = None) -> RunLabels:
    """The label space every model is compared in: the embedding runs' own (they must agree), or
    for softmax runs alone `vectors` (default: the runs' own setting, GloVe 50-d unless changed)."""
    embedding = [r for r in runs if r.config.head == "embedding"]
    spaces = {(r.config.vectors, r.config.vectors_path, r.config.label_rule, r.config.random_vectors,
               r.config.replacements, r.config.prompts, r.config.centre_labels) for r in embedding}
    if len(spaces) > 1:
        raise DeviseError("the embedding runs use different label spaces or rules; compare them in separate calls")
    if not embedding:
        return runs[0].label_space(replacements, vectors)
    run = embedding[0]
    if vectors and vectors != run.config.vectors:
        raise DeviseError(f"--vectors {vectors} differs from the embedding run's label space {run.config.vectors}")
    return run.label_space(replacements)


def evaluate_zero_shot(models: list[ZeroShotModel], target: ImageSet, space: RunLabels, vocabulary_spec: str,
                       outputs: dict[str, torch.Tensor], conse_top: int = CONSE_TOP,
                       gzsl: tuple[ImageSet, dict[str, torch.Tensor], list[str], dict[str, dict]] | None = None,
                       examples: list[int] = ()) -> dict:
    """Every zero-shot metric for every model on one target set.

    `outputs[name]` holds the model's raw outputs on `target.images` (logits or unit vectors).
    For the images indexed by `examples`, each model's top-5 with each label's similarity to the
    true label goes into `results["examples"]` (the side-by-side figure).
    With `gzsl` = (all images of the dataset, the models' outputs on them, the seen class ids, the
    models' class-split calibrations by name), for a held-out split of the training dataset, the
    generalised zero-shot figures are added (`generalised`). Where the target's classes are WordNet nouns, every ranking also gets
    hierarchical precision@k (hp@k).
    """
    target_vectors = space.embed(target.class_names, target.class_ids)
    true_vectors = target_vectors[target.labels]
    true_ids = [target.class_ids[y] for y in target.labels.tolist()]
    target_vocabulary = Vocabulary(target.class_names, target_vectors, "target", target.class_ids)
    results: dict = {"target": target.name, "images": len(target), "target_classes": target.num_classes,
                     "label_space": space.name, "vocabulary": vocabulary_spec, "models": {},
                     "examples": {"index": list(examples), "true": [target.class_names[target.labels[i]] for i in examples],
                                  "predictions": {}}}
    control = None
    k = max(ZERO_SHOT_KS)
    for model in models:
        training_labels = model.run.class_names
        training_ids = model.run.class_ids or (gzsl[2] if gzsl else None)
        training_vectors, without = training_label_vectors(space, model.run, training_ids)
        if control is None and not without:
            control = similarity_control(target_vectors, training_vectors)
        out = outputs[model.name]
        if model.kind == "softmax":  # it ranks its own training labels, whatever the vocabulary
            vocabulary = Vocabulary(training_labels, training_vectors, "train", training_ids)
            top = top_vocabulary = top_labels("softmax", out, training_vectors, training_vectors, k)[1]
            over_target = over_vocabulary = scored(top, vocabulary, target, true_vectors, true_ids)
        else:
            has_vector = [i for i, row in enumerate(training_vectors) if not without or bool(row.any())]
            vocabulary = build_vocabulary(space, {"target": target.class_names,
                                                  "train": [training_labels[i] for i in has_vector]}, vocabulary_spec,
                                          {"target": target.class_ids,
                                           "train": [training_ids[i] for i in has_vector] if training_ids else None})
            top = top_labels(model.kind, out, training_vectors, target_vectors, k, conse_top)[1]
            over_target = scored(top, target_vocabulary, target, true_vectors, true_ids)
            top_vocabulary = top_labels(model.kind, out, training_vectors, vocabulary.vectors, k, conse_top)[1]
            over_vocabulary = scored(top_vocabulary, vocabulary, target, true_vectors, true_ids)
        results["examples"]["predictions"][model.name] = [
            [(vocabulary.labels[j], float(vocabulary.vectors[j] @ true_vectors[i])) for j in top_vocabulary[i, :5].tolist()]
            for i in examples]
        entry = {"kind": model.kind, **{key: over_target[key] for key in over_target if key != "similarity"},
                 "similarity": over_vocabulary["similarity"],
                 "lift": over_vocabulary["similarity"] - control,
                 "vocabulary_size": len(vocabulary), "vocabulary_missing": vocabulary.missing,
                 **{f"vocabulary_{key}": over_vocabulary[key] for key in over_vocabulary
                    if key.startswith(("hit@", "hp@"))}}
        entry["body"] = body_figures(getattr(model.run, "body_trained_on", None), target, top, target_vocabulary if model.kind != "softmax"
                                     else vocabulary, true_vectors)
        if gzsl is not None:
            entry.update(generalised(model, space, training_vectors, *gzsl, conse_top))
        if without:
            entry["training_labels_without_vector"] = without
        if is_stock(model.run):
            entry["stock"] = True
        results["models"][model.name] = entry
    results["control_similarity"] = control if control is not None else similarity_control(
        target_vectors, training_vectors)
    return results


def training_label_vectors(space: RunLabels, run: Run, ids: list[str] | None) -> tuple[torch.Tensor, int]:
    """A model's training labels' vectors in the space compared in, and how many have none. A run
    devise trained needs every one (the error names the fix); a stock ImageNet classifier's labels
    without a vector (13 of 1,000 in GloVe, "kuvasz", "schipperke", ...) get a zero row, so that
    ConSE's mean leaves them out and they score 0 as a softmax prediction."""
    if not is_stock(run):
        return space.embed(run.class_names, ids), 0
    return vectors_or_zeros(space, run.class_names, ids)


BODY_KS = (1, 5, 10)
PARTS = ("unseen", "seen", "unknown")  # by the body: never trained on, trained on, not known


def body_split(target: ImageSet, trained_on: list[str] | None) -> list[str]:
    """Each target class as the model's body knows it: "seen" (trained on), "unseen" or "unknown".
    A class is matched by its WordNet id where it has one, else by its name looked up as a WordNet
    noun (its most frequent sense); a name that does not resolve, or a body whose training classes
    are not known, is "unknown", never "unseen"."""
    if trained_on is None:
        return ["unknown"] * target.num_classes
    known = set(trained_on)
    known_wnids = {resolve_wnid(i, i) for i in known} - {None}
    parts = []
    for name, class_id in zip(target.class_names, target.class_ids):
        if class_id in known or name in known:
            parts.append("seen")
            continue
        wnid = resolve_wnid(name, class_id)
        parts.append("unknown" if wnid is None else "seen" if wnid in known or wnid in known_wnids else "unseen")
    return parts


def regime(parts: list[str]) -> str:
    """What a model's figures on a target are: zero-shot only if its body never trained on any of
    the target's classes; transfer if it trained on all of them."""
    if all(p == "unseen" for p in parts):
        return "zero-shot"
    if all(p == "seen" for p in parts):
        return "transfer"
    return "mixed" if "unknown" not in parts else "unknown"


def body_figures(trained_on: dict | None, target: ImageSet, top: torch.Tensor, vocabulary: Vocabulary,
                 true_vectors: torch.Tensor) -> dict:
    """The target's classes split by what the model's body was trained on, with hit@k over the
    target ranking for each part, and what the figures may be called (`regime`)."""
    trained_on = trained_on or {"description": "", "ids": []}
    parts = body_split(target, trained_on["ids"])
    truth = vocabulary.positions(target.class_names, target.class_ids)
    figures = {"trained_on": trained_on["description"], "regime": regime(parts)}
    for part in PARTS:
        classes = [c for c, p in enumerate(parts) if p == part]
        images = torch.isin(target.labels, torch.tensor(classes, dtype=torch.int64))
        figures[part] = {"classes": len(classes), "images": int(images.sum())}
        if images.any():
            hits = ranking_metrics(top[images], vocabulary.vectors, truth, target.labels[images], true_vectors[images],
                                   BODY_KS)
            figures[part].update({f"hit@{k}": hits[f"hit@{k}"] for k in BODY_KS})
    return figures


def scored(top: torch.Tensor, vocabulary: Vocabulary, target: ImageSet, true_vectors: torch.Tensor,
           true_ids: list[str]) -> dict[str, float]:
    """hit@k, per-class top-1, similarity and (for WordNet classes) hp@k of one ranking of `vocabulary`."""
    truth = vocabulary.positions(target.class_names, target.class_ids)
    return {**ranking_metrics(top, vocabulary.vectors, truth, target.labels, true_vectors),
            **ranking_hierarchy(top, vocabulary.ids, true_ids, HIERARCHY_KS)}


def generalised(model: ZeroShotModel, space: RunLabels, training_vectors: torch.Tensor, everything: ImageSet,
                all_outputs: dict[str, torch.Tensor], seen_ids: list[str], calibrations: dict[str, dict],
                conse_top: int) -> dict[str, float]:
    """Generalised zero-shot: top-1 over all the dataset's labels (softmax: over its own labels,
    so it never names an unseen class), plain and, for DeViSE and ConSE, calibrated
    (`devise.evaluation.metrics.generalised_figures`) with the model's class-split constant where
    `calibrations` has one, else the seen-share rule."""
    seen_label = torch.tensor([c in set(seen_ids) for c in everything.class_ids])
    if model.kind == "softmax":  # its own labels that are the dataset's (a pretrained classifier has more)
        where = {class_id: i for i, class_id in enumerate(everything.class_ids)}
        own = [(i, where[c]) for i, c in enumerate(model.run.class_ids or seen_ids) if c in where]
        scores = torch.full((len(everything), len(seen_label)), float("-inf"))
        scores[:, [c for _, c in own]] = all_outputs[model.name].float()[:, [i for i, _ in own]]
        return generalised_figures(scores, everything.labels, seen_label, calibrate=False)
    queries = query_vectors(model.kind, all_outputs[model.name], training_vectors, conse_top)
    everything_vectors = space.embed(everything.class_names, everything.class_ids)
    calibration = calibrations.get(model.name)
    gamma = calibration["gamma"] if calibration else None
    return {**generalised_figures(queries @ everything_vectors.T, everything.labels, seen_label, gamma=gamma),
            "calibration": calibration["method"] if calibration else "seen share"}


def load_target(kind: str, root: str | None, runs: list[Run], image_size: int | None, progress: bool = True,
                download: bool = False, cache_dir: str | None = None,
                interpolation: str = "bilinear") -> tuple[ImageSet, tuple[ImageSet, list[str]] | None]:
    """The target images, and for a held-out split also (all images, seen class ids).

    `kind` is "unseen" (the classes the runs held out of training with --unseen, as their
    unseen.json lists them), "seen" (the classes they trained on: their validation images, for
    comparing a model that did not train on them, such as a stock classifier), or a dataset name:
    "cifar100" (its test split), "folder", "tiny-imagenet" (its val split), "toy".
    """
    if kind not in ("unseen", "seen"):
        split = {"cifar100": "test", "tiny-imagenet": "val", "toy": "test"}.get(kind)
        return load_dataset(kind, root, split, image_size, cache_dir, download, progress,
                            interpolation=interpolation), None
    trained = [r for r in runs if not is_stock(r)]  # a stock classifier holds nothing out
    held_out = {(r.config.data, tuple(read_unseen(r.folder, r.config))) for r in trained}
    if len(held_out) != 1 or not next(iter(held_out))[1]:
        raise DeviseError(f"--target {kind} needs runs trained with the same --unseen K and --unseen-seed")
    config = trained[0].config
    unseen = list(next(iter(held_out))[1])
    everything = load_dataset(config.data, root or config.data_root, config.val_split, image_size,
                              cache_dir, config.download, progress, config.on_bad_image, config.val_share,
                              interpolation=interpolation)
    seen = seen_classes(everything, unseen)
    if kind == "seen":
        return keep_classes(everything, seen), None
    return keep_classes(everything, unseen), (everything, seen)


def target_class_names(kind: str, root: str | None) -> list[str] | None:
    """The target's class names where they can be read without decoding an image (a folder's
    class folders), else None."""
    if kind == "folder" and root is not None:
        return folder_class_names(root)
    return None


def check_labels(space: RunLabels, labels: list[str] | None) -> None:
    """Fail with the one line that names every label without a vector in `space` and the flag that
    fixes it, found without embedding the others."""
    if labels:
        missing = [label for label, found in zip(labels, space.available(labels)) if not found]
        if missing:
            space.embed(missing)  # raises the missing-labels error


def run_zero_shot(run_folders: list[str | Path], target: str, target_root: str | None = None,
                  vocabulary: str = "target,train", vectors: str | None = None, conse_top: int = CONSE_TOP,
                  out: str | Path | None = None, examples: int | list[int] = 6, seed: int = 0, progress: bool = True,
                  download: bool = False, device: str = "auto", replacements: str | None = None,
                  cache_dir: str | None = None, prompts: str | None = None, image_size: int | None = None) -> dict:
    """Load runs, run them on the target images, compute every metric, and write into `out`
    (default: `<first run>/zeroshot-<target>`): `zeroshot.json`, the similarity bar chart and
    the side-by-side top-5 figure of `examples` images: that many drawn with `seed`, or a list of
    chosen image indices into the target set. The models run on `device`; labels are read in the
    runs' label space, with a `replacements` file for labels it has no vector for. Datasets are
    cached in `cache_dir` (default: the first run's). A pretrained classifier named instead of a
    run (`efficientnet-lite0`) reads its labels in `vectors` with `prompts`, at `image_size` (default:
    its weights' own)."""
    first = str(run_folders[0])
    default = Path("runs") / first if is_pretrained_name(first) and not Path(first).is_dir() else Path(first)
    folder = Path(out) if out else zero_shot_folder(default, target)
    with held(folder, "zeroshot"):
        return zero_shot_into(folder, run_folders, target, target_root, vocabulary, vectors, conse_top, examples,
                              seed, progress, download, device, replacements, cache_dir, prompts, image_size)


def zero_shot_into(folder: Path, run_folders: list, target: str, target_root: str | None, vocabulary: str,
                   vectors: str | None, conse_top: int, examples: int | list[int], seed: int, progress: bool,
                   download: bool, device: str, replacements: str | None, cache_dir: str | None,
                   prompts: str | None = None, image_size: int | None = None) -> dict:
    from devise.plots import plot_examples, plot_similarity

    runs = [load_model_run(path, device, vectors, prompts, image_size) for path in run_folders]
    space = comparison_space(runs, vectors, replacements)
    check_labels(space, target_class_names(target, target_root))  # before any image is decoded
    held_out = target in ("unseen", "seen")
    data = next((r.config.data for r in runs if r.config.unseen), target) if held_out else target
    sizes = {run.folder: (stored_size(run.config, data), stored_interpolation(run.config))
             for run in runs}  # each model's images as it keeps them
    cache = cache_dir or next((r.config.cache_dir for r in runs if r.config.cache_dir), None)
    loaded = {size: load_target(target, target_root, runs, size[0], progress, download, cache, size[1])
              for size in dict.fromkeys(sizes.values())}
    targets, gzsl_all = loaded[sizes[runs[0].folder]]
    check_labels(space, targets.class_names)  # before the models run
    models = models_from_runs(runs, conse_top)

    def source(run: Run) -> ImageSet:
        own_targets, own_all = loaded[sizes[run.folder]]
        return own_all[0] if own_all else own_targets

    raw = {run.folder: model_outputs(run, source(run), progress=progress) for run in runs}
    all_outputs = {m.name: raw[m.run.folder] for m in models}
    gzsl = None
    if gzsl_all:
        everything, seen_ids = gzsl_all
        unseen_image = ~torch.tensor([c in set(seen_ids) for c in everything.class_ids])[everything.labels]
        outputs = {name: value[unseen_image] for name, value in all_outputs.items()}
        gzsl = (everything, all_outputs, seen_ids,
                calibrations(models, space, everything, seen_ids, target_root, conse_top, progress))
    else:
        outputs = all_outputs
    chosen = choose_examples(examples, len(targets), seed)
    results = evaluate_zero_shot(models, targets, space, vocabulary, outputs, conse_top, gzsl, chosen)
    results["target"] = target
    write_zero_shot(folder, results)
    plot_similarity(results, folder / "similarity.png")
    if chosen:
        shown = results["examples"]
        plot_examples([targets.images[i] for i in chosen], shown["true"], shown["predictions"], folder / "examples.png")
    results["folder"] = str(folder)
    return results


def calibrations(models: list[ZeroShotModel], space: RunLabels, everything: ImageSet, seen_ids: list[str],
                 data_root: str | None, conse_top: int, progress: bool) -> dict[str, dict]:
    """Each model's calibrated-stacking constant chosen on class splits (`devise.training.calibration`),
    where it has one: a frozen-body DeViSE run's, stored when it trained, and ConSE's, chosen
    here in the label space the models are compared in."""
    found = {}
    for model in models:
        if model.kind == "DeViSE":
            stored = read_calibration(model.run.folder)
            if stored:
                found[model.name] = stored
        elif model.kind == "ConSE" and class_split_applies(model.run.config, len(seen_ids)):
            stage(f"choosing ConSE's calibrated-stacking constant on {SPLITS} class splits of the seen classes", progress)
            run = model.run
            train_set = run_split(run, "train", data_root, progress)
            found[model.name] = class_split_constant(run, train_set, keep_classes(everything, seen_ids),
                                                     space.embed(train_set.class_names, train_set.class_ids),
                                                     conse_top, progress=progress)
    return found


def choose_examples(examples: int | list[int], count: int, seed: int) -> list[int]:
    """Image indices for the side-by-side figure: `examples` random ones, or the ones listed."""
    if isinstance(examples, int):
        return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:examples].tolist()
    wrong = [i for i in examples if not 0 <= i < count]
    if wrong:
        raise DeviseError(f"example image index {wrong[0]} is outside the target's {count} images")
    return list(examples)
