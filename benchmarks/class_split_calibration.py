"""Calibrated stacking with Chao et al.'s own choice of constant: seen classes held out of a head.

`devise zeroshot` chooses the constant of calibrated stacking (taken off every seen label's score)
on seen-class images alone, so that a tenth of them are named unseen; on the cpu presets that
leaves H far below the best the S-U curve reaches. Chao et al. (2016) chose it by cross-validation
over classes instead: hold some seen classes out of training, and take the constant that gives
the best H between those and the rest. With a frozen body that costs one linear head per split.

For a softmax run trained with `--unseen K` (its body frozen, as the presets' DeViSE stages keep
it), this trains the linear hinge head of the presets (MiniLM with hypernym prompts) on its seen
classes' features less K pseudo-unseen ones, for three seeded splits; finds the constant that
maximises H over the seen classes' validation images (the pseudo-unseen as unseen); then scores
the head trained on every seen class with the mean of those constants, on the images `devise
zeroshot` scores (the unseen classes' never chosen on). Prints one line per split and the result.

Usage: python benchmarks/class_split_calibration.py SOFTMAX_RUN [--splits 3]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch
import torch.nn.functional as F

from devise.data import load_dataset
from devise.metrics import (calibration_half, generalised_zero_shot, harmonic_mean, seen_unseen_curve,
                            seen_unseen_margins)
from devise.runs import load_run, read_unseen
from devise.vectors import label_space_for
from zero_shot_heads import features_of, fit_head


def head_queries(features, labels, vectors, queries_of) -> torch.Tensor:
    head = fit_head(features, labels, vectors, "hinge", 0, 0.1, 6)
    with torch.no_grad():
        return F.normalize(head(queries_of), dim=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("softmax_run")
    parser.add_argument("--splits", type=int, default=3)
    args = parser.parse_args()

    run = load_run(args.softmax_run)
    config = run.config
    unseen = set(read_unseen(run.folder, config))
    train = load_dataset(config.data, config.data_root, "train", config.image_size, config.cache_dir, progress=False)
    everything = load_dataset(config.data, config.data_root, config.val_split, config.image_size, config.cache_dir,
                              progress=False)
    seen_label = torch.tensor([c not in unseen for c in everything.class_ids])
    seen_columns = seen_label.nonzero()[:, 0]
    rows = seen_label[train.labels]
    train_labels = torch.searchsorted(seen_columns, train.labels[rows])
    train_features, _ = features_of(run, train.subset(rows))
    val_features, _ = features_of(run, everything)
    space = label_space_for(replace(config, vectors="minilm", prompts="hypernym", head="embedding"))
    vectors = space.embed(everything.class_names, everything.class_ids)

    seen_image = seen_label[everything.labels]
    seen_val_labels = torch.searchsorted(seen_columns, everything.labels[seen_image])
    chosen = []
    for split in range(args.splits):
        order = torch.randperm(len(seen_columns), generator=torch.Generator().manual_seed(100 + split))
        pseudo = torch.zeros(len(seen_columns), dtype=torch.bool)
        pseudo[order[: len(unseen)]] = True
        kept = ~pseudo[train_labels]
        kept_labels = torch.searchsorted((~pseudo).nonzero()[:, 0], train_labels[kept])
        queries = head_queries(train_features[kept], kept_labels, vectors[seen_columns][~pseudo],
                               val_features[seen_image])
        margin, seen_right, unseen_right = seen_unseen_margins(queries @ vectors[seen_columns].T, seen_val_labels,
                                                               ~pseudo)
        gammas, S, U = seen_unseen_curve(margin, seen_right, unseen_right, seen_val_labels, ~pseudo[seen_val_labels])
        H = torch.tensor([harmonic_mean(float(s), float(u)) for s, u in zip(S, U)])
        best = int(H.argmax())
        chosen.append(float(gammas[best]))
        print(json.dumps({"split": split, "pseudo_unseen_H": round(float(H[best]), 3), "gamma": round(chosen[-1], 4)}),
              flush=True)

    gamma = sum(chosen) / len(chosen)
    queries = head_queries(train_features, train_labels, vectors[seen_columns], val_features)
    margin, seen_right, unseen_right = seen_unseen_margins(queries @ vectors.T, everything.labels, seen_label)
    scored = ~calibration_half(seen_image)
    for name, constant in (("as they come", 0.0), ("class-split constant", gamma)):
        correct = torch.where(margin < constant, unseen_right, seen_right)
        figures = generalised_zero_shot(correct[scored], everything.labels[scored], seen_image[scored])
        print(json.dumps({"constant": name, "gamma": round(constant, 4), **{k: round(v, 3) for k, v in figures.items()}}),
              flush=True)


if __name__ == "__main__":
    main()
