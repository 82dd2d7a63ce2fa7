"""Zero-shot evaluation: name images of classes the models never trained on, and write the figures.

DeViSE, ConSE and softmax (`DeviseModel`) run on the same target images and are scored in one
label space: the embedding models' own, else `--vectors`. Each model's target classes are split by
what its body was trained on, so that only the unseen part is called zero-shot. The measures and
the protocol: docs/zero-shot.md.
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from devise import files
from devise.data import ImageSet, load_dataset
from devise.data.cache import cache_folder
from devise.data.folder import folder_class_names
from devise.data.splits import keep_classes, seen_classes
from devise.errors import DeviseError
from devise.evaluation.metrics import (
    BOOTSTRAP_RESAMPLES,
    HIERARCHY_KS,
    ZERO_SHOT_KS,
    bootstrap_interval,
    confusion_counts,
    generalised_figures,
    image_hits,
    per_class_hits,
    ranking_metrics,
    similarity_control,
)
from devise.labels.run_labels import RunLabels
from devise.labels.vocabulary import Vocabulary, build_vocabulary, vectors_or_zeros
from devise.labels.wordnet import ranking_hierarchy, resolve_wnid
from devise.model.export import load
from devise.model.inference import CONSE_TOP, DeviseModel, query_vectors, top_labels
from devise.model.network import stored_interpolation, stored_size
from devise.model.pretrained import is_pretrained_name
from devise.plots import plot_examples, plot_similarity
from devise.training import runs
from devise.training.calibration import SPLITS, class_split_applies, class_split_constant
from devise.training.runs import held, read_calibration, read_unseen, run_split, write_zero_shot, zero_shot_folder

log = logging.getLogger(__name__)


@dataclass
class ZeroShotRequest:
    """One zero-shot comparison: the models (run folders, exported folders, or a pretrained
    classifier's name), the target and the candidates, and where the results go.

    `target` is "unseen" (the classes the runs held out with --unseen), "seen" (those they trained
    on), or a dataset: "cifar100", "folder" (`target_root`), "tiny-imagenet", "toy". `vocabulary`
    is a comma list of target, train, words:N, file:PATH, wordnet:2hop|3hop|all. A softmax model
    alone is compared in `vectors` (with `prompts` for a sentence space); a pretrained classifier
    runs at `image_size` (default: its weights' own). `examples`: that many target images drawn with
    `seed` for the side-by-side figure, or a list of chosen indices. `out` defaults to
    `<first run>/zeroshot-<target>`."""

    models: list[str | Path]
    target: str
    target_root: str | None = None
    vocabulary: str = "target,train"
    vectors: str | None = None
    prompts: str | None = None
    image_size: int | None = None
    conse_top: int = CONSE_TOP
    out: str | Path | None = None
    examples: int | list[int] = 6
    seed: int = 0
    progress: bool = True
    download: bool = False
    device: str = "auto"
    precision: str = "float32"  # the models' arithmetic (`devise.load`'s precision)
    replacements: str | None = None
    cache_dir: str | None = None

    @property
    def folder(self) -> Path:
        """Where the results are written."""
        if self.out:
            return Path(self.out)
        first = str(self.models[0])
        stock = is_pretrained_name(first) and not Path(first).is_dir()
        return zero_shot_folder(Path("runs") / first if stock else Path(first), self.target)


@dataclass
class ZeroShotModel:
    """One model under test: its name, kind ("DeViSE", "ConSE" or "softmax") and the model."""

    name: str
    kind: str
    model: DeviseModel


def models_under_test(models: list[DeviseModel], conse_top: int = CONSE_TOP) -> list[ZeroShotModel]:
    """An embedding model is DeViSE; a softmax model gives both ConSE and itself."""
    tested = []
    for model in models:
        if model.kind == "embedding":
            tested.append(ZeroShotModel(f"DeViSE ({model.name})", "DeViSE", model))
        else:
            tested.append(ZeroShotModel(f"ConSE T={conse_top} ({model.name})", "ConSE", model))
            tested.append(ZeroShotModel(f"softmax ({model.name})", "softmax", model))
    return tested


def comparison_space(models: list[DeviseModel], vectors: str | None = None) -> RunLabels:
    """The label space every model is compared in: the embedding models' own (they must agree), or
    for softmax models alone the first one's (loaded in `--vectors` when given)."""
    embedding = [m for m in models if m.kind == "embedding"]
    spaces = {repr(space_identity(m)) for m in embedding}
    if len(spaces) > 1:
        raise DeviseError("the embedding models use different label spaces or rules; compare them in separate calls")
    if not embedding:
        return models[0].text_space()
    source = embedding[0].config["label_space"]["source"]
    if vectors and vectors != source:
        raise DeviseError(f"--vectors {vectors} differs from the embedding model's label space {source}")
    return embedding[0].text_space()


def space_identity(model: DeviseModel) -> tuple:
    """What makes two models read labels alike: space, vectors file, prompts, control, centring,
    synonym rule and replacements."""
    space = model.config["label_space"]
    return (space["source"], space.get("path"), space.get("prompts"), space.get("random_vectors"),
            space.get("centre") is not None, model.config["label_rule"], model.config.get("replacements"))


def evaluate_zero_shot(models: list[ZeroShotModel], target: ImageSet, space: RunLabels, vocabulary_spec: str,
                       outputs: dict[str, torch.Tensor], *, conse_top: int = CONSE_TOP,
                       gzsl: tuple[ImageSet, dict[str, torch.Tensor], list[str], dict[str, dict]] | None = None,
                       examples: list[int] = ()) -> dict:
    """Every zero-shot metric for every model on one target set.

    `outputs[name]` holds the model's raw outputs on `target.images` (logits or unit vectors).
    For the images indexed by `examples`, each model's top-5 with each label's similarity to the
    true label goes into `results["examples"]` (the side-by-side figure), with the model's score of
    each (`scores`: cosine, or softmax's probability) and the images as PNG.
    Each model also gets its per-class hit@k, confusion counts and bootstrap intervals
    (`class_figures`), and DeViSE and ConSE a 2-D map of image and label vectors (`label_map`).
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
                     "class_names": list(target.class_names),
                     "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": 0, "level": 0.95, "over": "images"},
                     "examples": {"index": list(examples), "true": [target.class_names[target.labels[i]] for i in examples],
                                  "images": [png_data(target.images[i]) for i in examples], "predictions": {},
                                  "scores": {}}}
    control = None
    k = max(ZERO_SHOT_KS)
    for model in models:
        training_labels = model.model.labels
        training_ids = model.model.label_ids or (gzsl[2] if gzsl else None)
        training_vectors, without = training_label_vectors(space, model.model, training_ids)
        if control is None and not without:
            control = similarity_control(target_vectors, training_vectors)
        out = outputs[model.name]
        if model.kind == "softmax":  # it ranks its own training labels, whatever the vocabulary
            vocabulary = Vocabulary(training_labels, training_vectors, "train", training_ids)
            scores_vocabulary, top = top_labels("softmax", out, training_vectors, training_vectors, k)
            top_vocabulary = top
            over_target = over_vocabulary = scored(top, vocabulary, target, true_vectors, true_ids)
        else:
            has_vector = [i for i, row in enumerate(training_vectors) if not without or bool(row.any())]
            vocabulary = build_vocabulary(space, {"target": target.class_names,
                                                  "train": [training_labels[i] for i in has_vector]}, vocabulary_spec,
                                          {"target": target.class_ids,
                                           "train": [training_ids[i] for i in has_vector] if training_ids else None})
            top = top_labels(model.kind, out, training_vectors, target_vectors, k, conse_top)[1]
            over_target = scored(top, target_vocabulary, target, true_vectors, true_ids)
            scores_vocabulary, top_vocabulary = top_labels(model.kind, out, training_vectors, vocabulary.vectors, k,
                                                           conse_top)
            over_vocabulary = scored(top_vocabulary, vocabulary, target, true_vectors, true_ids)
        results["examples"]["scores"][model.name] = [[round(float(v), 6) for v in scores_vocabulary[i, :5]]
                                                     for i in examples]
        results["examples"]["predictions"][model.name] = [
            [(vocabulary.labels[j], float(vocabulary.vectors[j] @ true_vectors[i])) for j in top_vocabulary[i, :5].tolist()]
            for i in examples]
        entry = {"kind": model.kind, **{key: over_target[key] for key in over_target if key != "similarity"},
                 "similarity": over_vocabulary["similarity"],
                 "lift": over_vocabulary["similarity"] - control,
                 "vocabulary_size": len(vocabulary), "vocabulary_missing": vocabulary.missing,
                 **{f"vocabulary_{key}": over_vocabulary[key] for key in over_vocabulary
                    if key.startswith(("hit@", "hp@"))}}
        entry["body"] = body_figures(model.model.body_trained_on, target, top,
                                     vocabulary if model.kind == "softmax" else target_vocabulary, true_vectors,
                                     dataset=gzsl[0] if gzsl else None)
        entry.update(class_figures(top, vocabulary if model.kind == "softmax" else target_vocabulary, target))
        if model.kind != "softmax":
            entry["map"] = label_map(query_vectors(model.kind, out, training_vectors, conse_top), target_vectors,
                                     target.labels)
        if gzsl is not None:
            entry.update(generalised(model, space, training_vectors, *gzsl, conse_top))
        if without:
            entry["training_labels_without_vector"] = without
        if model.model.stock:
            entry["stock"] = True
        results["models"][model.name] = entry
    results["control_similarity"] = control if control is not None else similarity_control(
        target_vectors, training_vectors)
    return results


def training_label_vectors(space: RunLabels, model: DeviseModel, ids: list[str] | None) -> tuple[torch.Tensor, int]:
    """A model's training labels' vectors in the space compared in, and how many have none. A run
    devise trained needs every one (the error names the fix); a stock ImageNet classifier's labels
    without a vector (13 of 1,000 in GloVe, "kuvasz", "schipperke", ...) get a zero row, so that
    ConSE's mean leaves them out and they score 0 as a softmax prediction."""
    if not model.stock:
        return space.embed(model.labels, ids), 0
    return vectors_or_zeros(space, model.labels, ids)


BODY_KS = (1, 5, 10)

PARTS = ("unseen", "seen", "unknown")  # by the body: never trained on, trained on, not known


def body_split(target: ImageSet, trained_on: list[str] | None, *, dataset: ImageSet | None = None) -> list[str]:
    """Each target class as the model's body knows it: "seen" (trained on), "unseen" or "unknown".
    A class is matched by its WordNet id where it has one, else by its name looked up as a WordNet
    noun (its most frequent sense); a name that does not resolve, or a body whose training classes
    are not known, is "unknown", never "unseen". A body trained only on classes of the `dataset`
    the target is drawn from (default: the target itself; for held-out classes, the whole dataset)
    has seen none of its other classes: the classes of one dataset are distinct by construction."""
    if trained_on is None:
        return ["unknown"] * target.num_classes
    known = set(trained_on)
    whole = dataset if dataset is not None else target
    if known <= set(whole.class_names) | set(whole.class_ids or []):
        return ["seen" if name in known or class_id in known else "unseen"
                for name, class_id in zip(target.class_names, target.class_ids)]
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
                 true_vectors: torch.Tensor, *, dataset: ImageSet | None = None) -> dict:
    """The target's classes split by what the model's body was trained on, with hit@k over the
    target ranking for each part, and what the figures may be called (`regime`)."""
    trained_on = trained_on or {"description": "", "ids": []}
    parts = body_split(target, trained_on["ids"], dataset=dataset)
    truth = vocabulary.positions(target.class_names, target.class_ids)
    figures = {"trained_on": trained_on["description"], "regime": regime(parts)}
    for part in PARTS:
        classes = [c for c, p in enumerate(parts) if p == part]
        images = torch.isin(target.labels, torch.tensor(classes, dtype=torch.int64))
        figures[part] = {"classes": len(classes), "images": int(images.sum())}
        if images.any():
            hits = ranking_metrics(top[images], vocabulary.vectors, truth, target.labels[images], true_vectors[images],
                                   ks=BODY_KS)
            figures[part].update({f"hit@{k}": hits[f"hit@{k}"] for k in BODY_KS})
    return figures


INTERVAL_KS = (1, 5)  # the headline figures given a bootstrap interval


def class_figures(top: torch.Tensor, vocabulary: Vocabulary, target: ImageSet) -> dict:
    """What a single mean hides, over one ranking of `vocabulary`: each target class's hit@k
    (`per_class`, lists in `class_names` order), the counts of true class against first-ranked
    target class (`confusion`, a last column for a first label outside the target), and bootstrap
    95% intervals over images for hit@1 and hit@5 (`interval_95`)."""
    truth = vocabulary.positions(target.class_names, target.class_ids)
    found = image_hits(top, truth, target.labels)
    return {"per_class": per_class_hits(found, target.labels, target.num_classes),
            "confusion": confusion_counts(top[:, 0], truth, target.labels),
            "interval_95": {f"hit@{k}": bootstrap_interval(found[:, min(k, found.shape[1]) - 1])
                            for k in INTERVAL_KS}}


MAP_IMAGES = 300


def label_map(queries: torch.Tensor, label_vectors: torch.Tensor, labels: torch.Tensor, *, seed: int = 0) -> dict:
    """A 2-D t-SNE map (scikit-learn's `TSNE`) of a seeded sample of at most `MAP_IMAGES` image
    vectors together with the target's label vectors: does each class's images gather at its
    label? Each set is centred on its own mean and made unit length first. Labels share a large
    common part (GloVe's colour words sit at cosine 0.86 to one another) that shifts every label's
    score for an image alike, and so never changes a ranking; left in, t-SNE shows the gap
    between the two sets and not which label each image is nearest. Coordinates rounded for
    zeroshot.json."""
    from sklearn.manifold import TSNE  # imported here: a second's import that only this needs

    chosen = torch.randperm(len(queries), generator=torch.Generator().manual_seed(seed))[:MAP_IMAGES]
    points = torch.cat([centred(queries.cpu()[chosen]), centred(label_vectors.cpu())])
    perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
    xy = TSNE(2, perplexity=perplexity, init="pca", max_iter=500, random_state=seed).fit_transform(points.numpy())
    xy = [[round(float(x), 3), round(float(y), 3)] for x, y in xy]
    return {"method": "t-SNE (scikit-learn)", "images": xy[: len(chosen)], "image_class": labels.cpu()[chosen].tolist(),
            "labels": xy[len(chosen):]}


def centred(vectors: torch.Tensor) -> torch.Tensor:
    """Unit vectors less their mean, made unit length again."""
    vectors = F.normalize(vectors.float(), dim=1)
    return F.normalize(vectors - vectors.mean(dim=0), dim=1)


THUMBNAIL = 128


def png_data(image: torch.Tensor) -> str:
    """A target image (uint8, 3 x H x W) as base64 PNG, at most `THUMBNAIL` pixels a side: the
    report shows the examples as images from zeroshot.json alone."""
    picture = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    picture.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def scored(top: torch.Tensor, vocabulary: Vocabulary, target: ImageSet, true_vectors: torch.Tensor,
           true_ids: list[str]) -> dict[str, float]:
    """hit@k, per-class top-1, similarity and (for WordNet classes) hp@k of one ranking of `vocabulary`."""
    truth = vocabulary.positions(target.class_names, target.class_ids)
    return {**ranking_metrics(top, vocabulary.vectors, truth, target.labels, true_vectors),
            **ranking_hierarchy(top, vocabulary.ids, true_ids, HIERARCHY_KS)}


def generalised(model: ZeroShotModel, space: RunLabels, training_vectors: torch.Tensor, everything: ImageSet,
                all_outputs: dict[str, torch.Tensor], seen_ids: list[str], calibrations: dict[str, dict],
                conse_top: int) -> dict:
    """Generalised zero-shot: top-1 over all the dataset's labels (softmax: over its own labels,
    so it never names an unseen class), plain and, for DeViSE and ConSE, calibrated
    (`devise.evaluation.metrics.generalised_figures`) with the model's class-split constant where
    `calibrations` has one, else the seen-share rule."""
    seen_label = torch.tensor([c in set(seen_ids) for c in everything.class_ids])
    if model.kind == "softmax":  # its own labels that are the dataset's (a pretrained classifier has more)
        where = {class_id: i for i, class_id in enumerate(everything.class_ids)}
        own = [(i, where[c]) for i, c in enumerate(model.model.label_ids or seen_ids) if c in where]
        scores = torch.full((len(everything), len(seen_label)), float("-inf"))
        scores[:, [c for _, c in own]] = all_outputs[model.name].float()[:, [i for i, _ in own]]
        return generalised_figures(scores, everything.labels, seen_label, calibrate=False)
    queries = query_vectors(model.kind, all_outputs[model.name], training_vectors, conse_top)
    everything_vectors = space.embed(everything.class_names, everything.class_ids)
    calibration = calibrations.get(model.name)
    gamma = calibration["gamma"] if calibration else None
    return {**generalised_figures(queries @ everything_vectors.T, everything.labels, seen_label, gamma=gamma),
            "calibration": calibration["method"] if calibration else "seen share"}


def load_target(kind: str, root: str | None, models: list[DeviseModel], image_size: int | None, *,
                progress: bool = True, download: bool = False, cache_dir: str | None = None,
                interpolation: str = "bilinear") -> tuple[ImageSet, tuple[ImageSet, list[str]] | None]:
    """The target images (kept at `image_size`, None: the dataset's own), and for a held-out split
    also (all images, seen class ids).

    `kind` is "unseen" (the classes the runs held out of training with --unseen, as their
    unseen.json lists them), "seen" (the classes they trained on: their validation images, for
    comparing a model that did not train on them, such as a stock classifier), or a dataset name:
    "cifar100" (its test split), "folder", "tiny-imagenet" (its val split), "toy".
    """
    if kind not in ("unseen", "seen"):
        split = {"cifar100": "test", "tiny-imagenet": "val", "toy": "test"}.get(kind)
        return load_dataset(kind, root, split, image_size=image_size, cache_dir=cache_dir, download=download, progress=progress,
                            interpolation=interpolation), None
    runs = [m for m in models if m.settings is not None]  # a stock classifier or an exported folder holds nothing out
    held_out = {(m.settings.data, tuple(read_unseen(m.folder, m.settings))) for m in runs}
    if len(held_out) != 1 or not next(iter(held_out))[1]:
        raise DeviseError(f"--target {kind} needs run folders trained with the same --unseen K and --unseen-seed")
    config = runs[0].settings
    unseen = list(next(iter(held_out))[1])
    everything = load_dataset(config.data, root or config.data_root, config.val_split, image_size=image_size,
                              cache_dir=cache_dir, download=config.download, progress=progress, on_bad_image=config.on_bad_image, val_share=config.val_share,
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


def run_zero_shot(request: ZeroShotRequest) -> dict:
    """Load the models, run them on the target images, compute every metric, and write into the
    request's folder: `zeroshot.json`, the similarity bar chart and the side-by-side top-5 figure."""
    folder = request.folder
    claim_result_folder(folder)  # before any work
    with held(folder, "zeroshot"):
        return zero_shot_into(folder, request)


def claim_result_folder(folder: Path) -> None:
    """Refuse a result folder that devise did not write: the results replace it whole."""
    files.claim(folder, kind=runs.ZERO_SHOT_KIND, names=runs.ZERO_SHOT_FILES, legacy=runs.is_zero_shot_folder)


def write_results(folder: Path, results: dict, example_images: list[torch.Tensor]) -> None:
    """zeroshot.json and its figures as one folder, swapped in whole (`devise.files.whole_folder`):
    a reader never sees this result's numbers beside an earlier result's figures."""
    with files.whole_folder(folder, kind=runs.ZERO_SHOT_KIND, what="the zero-shot results",
                            names=runs.ZERO_SHOT_FILES, legacy=runs.is_zero_shot_folder) as building:
        write_zero_shot(building, results)
        plot_similarity(results, building / runs.SIMILARITY)
        if example_images:
            shown = results["examples"]
            plot_examples(example_images, shown["true"], shown["predictions"], building / runs.EXAMPLES)


def zero_shot_into(folder: Path, request: ZeroShotRequest) -> dict:
    models = [load(path, request.device, vectors=request.vectors, prompts=request.prompts,
                   replacements=request.replacements, image_size=request.image_size, precision=request.precision)
              for path in request.models]
    space = comparison_space(models, request.vectors)
    check_labels(space, target_class_names(request.target, request.target_root))  # before any image is decoded
    held_out = request.target in ("unseen", "seen")
    data = next((m.settings.data for m in models if m.settings and m.settings.unseen), "") if held_out else request.target
    kept = {id(m): (stored_size(m.preprocess, m.image_size, data), stored_interpolation(m.preprocess))
            for m in models}  # each model's images as it keeps them
    cache = request.cache_dir or next((m.settings.cache_dir for m in models if m.settings and m.settings.cache_dir), None)
    loaded = {form: load_target(request.target, request.target_root, models, form[0], progress=request.progress,
                                download=request.download, cache_dir=cache, interpolation=form[1])
              for form in dict.fromkeys(kept.values())}
    targets, gzsl_all = loaded[kept[id(models[0])]]
    check_labels(space, targets.class_names)  # before the models run
    tested = models_under_test(models, request.conse_top)

    def outputs_of(model: DeviseModel) -> torch.Tensor:
        own_targets, own_all = loaded[kept[id(model)]]
        return model.dataset_outputs(own_all[0] if own_all else own_targets, progress=request.progress,
                                     cache_dir=cache_folder(cache))

    raw = {id(model): outputs_of(model) for model in models}
    all_outputs = {t.name: raw[id(t.model)] for t in tested}
    gzsl = None
    if gzsl_all:
        everything, seen_ids = gzsl_all
        unseen_image = ~torch.tensor([c in set(seen_ids) for c in everything.class_ids])[everything.labels]
        outputs = {name: value[unseen_image] for name, value in all_outputs.items()}
        gzsl = (everything, all_outputs, seen_ids,
                calibrations(tested, space, everything, seen_ids, request.target_root, request.conse_top,
                             request.progress))
    else:
        outputs = all_outputs
    chosen = choose_examples(request.examples, len(targets), request.seed)
    results = evaluate_zero_shot(tested, targets, space, request.vocabulary, outputs, conse_top=request.conse_top,
                                 gzsl=gzsl, examples=chosen)
    results["target"] = request.target
    write_results(folder, results, [targets.images[i] for i in chosen])
    results["folder"] = str(folder)
    return results


def calibrations(tested: list[ZeroShotModel], space: RunLabels, everything: ImageSet, seen_ids: list[str],
                 data_root: str | None, conse_top: int, progress: bool) -> dict[str, dict]:
    """Each model's calibrated-stacking constant chosen on class splits (`devise.training.calibration`),
    where it has one: a frozen-body DeViSE run's, stored when it trained, and ConSE's, chosen
    here in the label space the models are compared in."""
    found = {}
    for test in tested:
        model, settings = test.model, test.model.settings
        if settings is None:
            continue
        if test.kind == "DeViSE":
            stored = read_calibration(model.folder)
            if stored:
                found[test.name] = stored
        elif test.kind == "ConSE" and class_split_applies(settings, len(seen_ids)):
            log.info(f"choosing ConSE's calibrated-stacking constant on {SPLITS} class splits of the seen classes")
            train_set = run_split(settings, model.folder, "train", data_root=data_root, progress=progress)
            cache = cache_folder(settings.cache_dir)

            def features_of(data: ImageSet, model: DeviseModel = model) -> torch.Tensor:
                return model.body_outputs(data, settings.eval_batch_size, progress, cache).to(model.device)

            found[test.name] = class_split_constant(settings, features_of, train_set, keep_classes(everything, seen_ids),
                                                    space.embed(train_set.class_names, train_set.class_ids),
                                                    conse_top=conse_top, progress=progress)
    return found


def choose_examples(examples: int | list[int], count: int, seed: int) -> list[int]:
    """Image indices for the side-by-side figure: `examples` random ones, or the ones listed."""
    if isinstance(examples, int):
        return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:examples].tolist()
    wrong = [i for i in examples if not 0 <= i < count]
    if wrong:
        raise DeviseError(f"example image index {wrong[0]} is outside the target's {count} images")
    return list(examples)
