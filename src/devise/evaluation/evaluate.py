"""Evaluate trained runs: hit@k over their training classes, written to metrics.json."""

from __future__ import annotations

from pathlib import Path

from devise.model.inference import model_outputs
from devise.evaluation.metrics import HIERARCHY_KS, HIT_KS, chance_hit_at_k, hit_at_k
from devise.training.runs import held, load_run, run_split, write_evaluation
from devise.labels.run_labels import run_space_name
from devise.labels.wordnet import ranking_hierarchy


def evaluate_run(folder: str | Path, split: str | None = None, data_root: str | None = None,
                 progress: bool = True, device: str = "auto") -> dict:
    """hit@k (k = 1, 2, 3, 5, 10, 20) over the training classes, written to `metrics.json`, and
    where the classes are WordNet nouns (Tiny ImageNet) hierarchical precision hp@k.

    Softmax runs rank classes by probability, embedding runs by cosine similarity of the
    predicted vector to each class's label vector.
    """
    with held(folder, "evaluate"):
        return evaluate_held(load_run(folder, device), split, data_root, progress)


def evaluate_held(run, split: str | None, data_root: str | None, progress: bool) -> dict:
    data = run_split(run, split, data_root, progress)
    scores = run.objective.class_scores(model_outputs(run, data, run.config.eval_batch_size, progress))
    result = {
        "run": str(run.folder), "head": run.config.head,
        "loss": getattr(run.objective, "loss_name", "cross-entropy"),
        "label_space": run_space_name(run.config),
        "split": split or run.config.val_split, "images": len(data), "classes": data.num_classes,
        **hit_at_k(scores, data.labels, HIT_KS),
        **ranking_hierarchy(scores.topk(min(max(HIT_KS), data.num_classes), dim=1).indices, data.class_ids,
                            [data.class_ids[y] for y in data.labels.tolist()], HIERARCHY_KS),
        "chance": chance_hit_at_k(data.num_classes, HIT_KS),
    }
    write_evaluation(run.folder, result)
    return result
