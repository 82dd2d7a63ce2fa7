"""Evaluate trained runs: hit@k over their training classes, written to metrics.json."""

from __future__ import annotations

from pathlib import Path

from devise.data.cache import cache_folder
from devise.errors import DeviseError
from devise.evaluation.metrics import HIERARCHY_KS, HIT_KS, chance_hit_at_k, hit_at_k
from devise.labels.wordnet import ranking_hierarchy
from devise.model.export import load
from devise.model.inference import DeviseModel
from devise.training.runs import held, run_split, write_evaluation


def evaluate_run(folder: str | Path, *, split: str | None = None, data_root: str | None = None,
                 progress: bool = True, device: str = "auto") -> dict:
    """hit@k (k = 1, 2, 3, 5, 10, 20) over the training classes, written to `metrics.json`, and
    where the classes are WordNet nouns (Tiny ImageNet) hierarchical precision hp@k.

    Softmax runs rank classes by probability, embedding runs by cosine similarity of the
    predicted vector to each class's label vector.
    """
    with held(folder, "evaluate"):
        model = load(folder, device)
        if model.settings is None:
            raise DeviseError(f"{folder} is not a run folder: evaluate needs the run's dataset and split")
        return evaluate_model(model, split=split, data_root=data_root, progress=progress)


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
