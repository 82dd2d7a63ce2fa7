"""Evaluate models: hit@k over their training classes, a run's written to its metrics.json.

A run folder knows the dataset and split it was trained on; an exported model or a pretrained
classifier does not, so it is evaluated on a dataset named with it (`--data`), over the images
of that dataset's classes that are among its labels, and the result is only printed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from devise.config import DATASETS
from devise.data import load_dataset
from devise.data.base import ImageSet
from devise.data.cache import cache_folder
from devise.data.splits import keep_classes
from devise.errors import DeviseError
from devise.evaluation.metrics import HIERARCHY_KS, HIT_KS, chance_hit_at_k, hit_at_k
from devise.labels.wordnet import ranking_hierarchy
from devise.model.export import load, model_kind
from devise.model.inference import DeviseModel
from devise.model.network import stored_interpolation, stored_size
from devise.training.runs import held, run_split, write_evaluation


def evaluate_run(folder: str | Path, *, split: str | None = None, data_root: str | None = None,
                 progress: bool = True, device: str = "auto", precision: str = "float32",
                 data: str | None = None) -> dict:
    """hit@k (k = 1, 2, 3, 5, 10, 20) over the training classes, written to `metrics.json`, and
    where the classes are WordNet nouns (Tiny ImageNet) hierarchical precision hp@k.

    Softmax runs rank classes by probability, embedding runs by cosine similarity of the
    predicted vector to each class's label vector. `folder` may also be an exported model or a
    pretrained classifier's name, evaluated on the dataset `data` (`evaluate_other`).
    """
    check_evaluable(folder, data)
    if model_kind(folder) != "run":
        model = load(folder, device, precision=precision)
        return evaluate_other(model, data=data, split=split, data_root=data_root, progress=progress)
    with held(folder, "evaluate"):
        model = load(folder, device, precision=precision)
        return evaluate_model(model, split=split, data_root=data_root, progress=progress)


def check_evaluable(folder: str | Path, data: str | None) -> None:
    """One clear line, before anything is loaded, when `folder` cannot be evaluated as asked: a
    run folder evaluates on its own split; any other model needs the dataset named."""
    if data is not None and data not in DATASETS:
        raise DeviseError(f"--data must be one of {', '.join(DATASETS)}, not {data!r}")
    if model_kind(folder) == "run" or data is not None:
        return
    raise DeviseError(f"{folder} is not a run folder, so it does not record the dataset it was trained on: "
                      f"name the one to evaluate it on with --data ({', '.join(DATASETS)}), with --data-root "
                      "and --split where it needs them")


def evaluate_model(model: DeviseModel, *, split: str | None, data_root: str | None, progress: bool) -> dict:
    settings = model.settings
    data = run_split(settings, model.folder, split, data_root=data_root, progress=progress)
    outputs = model.dataset_outputs(data, settings.eval_batch_size, progress, cache_folder(settings.cache_dir))
    scores = model.class_scores(outputs)
    result = {
        "run": str(model.folder), "head": settings.head,
        "loss": settings.loss if settings.head == "embedding" else "cross-entropy",
        "label_space": model.label_space_name,
        "split": split or settings.val_split, "images": len(data), "classes": data.num_classes,
        **hit_at_k(scores, data.labels, HIT_KS),
        **ranking_hierarchy(scores.topk(min(max(HIT_KS), data.num_classes), dim=1).indices, data.class_ids,
                            [data.class_ids[y] for y in data.labels.tolist()], HIERARCHY_KS),
        "chance": chance_hit_at_k(data.num_classes, HIT_KS),
    }
    write_evaluation(model.folder, result)
    return result


def evaluate_other(model: DeviseModel, *, data: str, split: str | None, data_root: str | None,
                   progress: bool) -> dict:
    """hit@k of an exported model or a pretrained classifier over its own labels, on the images of
    the classes of `data`'s `split` (default: val) that are among them, matched by WordNet id
    where both have one, else by name. Nothing is written: no run folder holds it."""
    split = split or "val"
    images = load_dataset(data, data_root, split, image_size=stored_size(model.preprocess, model.image_size, data),
                          progress=progress, interpolation=stored_interpolation(model.preprocess))
    images, targets = images_of_model_classes(model, images, f"{data}'s {split} split")
    outputs = model.dataset_outputs(images, progress=progress)
    scores = model.class_scores(outputs)
    candidate_ids = model.label_ids or model.labels
    return {
        "model": model.name, "head": model.kind, "label_space": model.label_space_name, "data": data,
        "split": split, "images": len(images), "classes": images.num_classes, "labels": len(model.labels),
        **hit_at_k(scores, targets, HIT_KS),
        **ranking_hierarchy(scores.topk(min(max(HIT_KS), len(model.labels)), dim=1).indices, candidate_ids,
                            [images.class_ids[y] for y in images.labels.tolist()], HIERARCHY_KS),
        "chance": chance_hit_at_k(len(model.labels), HIT_KS),
    }


def images_of_model_classes(model: DeviseModel, images: ImageSet, where: str) -> tuple[ImageSet, torch.Tensor]:
    """The images whose class is among the model's labels, and each one's index among them."""
    by_id = model.label_ids is not None and images.class_ids != images.class_names
    model_keys = model.label_ids if by_id else model.labels
    data_keys = images.class_ids if by_id else images.class_names
    position = {key: i for i, key in enumerate(model_keys)}
    shared = [class_id for class_id, key in zip(images.class_ids, data_keys) if key in position]
    if not shared:
        raise DeviseError(f"none of the {images.num_classes} classes of {where} is among the "
                          f"{len(model.labels)} labels of {model.name}")
    kept = keep_classes(images, shared)
    keys = dict(zip(images.class_ids, data_keys))
    targets = torch.tensor([position[keys[kept.class_ids[y]]] for y in kept.labels.tolist()], dtype=torch.int64)
    return kept, targets
