"""How much of the lift ratio is the yardstick's? Zero-shot lifts of DeViSE, ConSE and softmax on
the held-out classes, with the models' predictions fixed and the similarity read in several label
spaces.

`devise zeroshot` reads the semantic similarity of each unseen image's top 3 predictions (DeViSE
and ConSE among the held-out labels, softmax among its own seen labels) in the runs' own label
space, and its lift over the control (random label pairs in that space). A space that places a
label near its WordNet relatives (hypernym prompts) also credits the softmax model's seen-class
guesses, which are often such relatives, so the ratio of the lifts moves with the space even
though no prediction does. This script keeps every prediction as the runs make it and scores
the same top 3 in: the runs' own space (and, for a run with `--centre-labels`, the same without
its centre), MiniLM with bare names, MiniLM with the default prompts, and the 50-d GloVe the
student paper measured in.

Prints one line per yardstick.
Usage: python benchmarks/lift_yardsticks.py DEVISE_RUN SOFTMAX_RUN
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch
import torch.nn.functional as F

from devise.data import load_dataset
from devise.evaluation.metrics import SIMILARITY_TOP, semantic_similarity, similarity_control
from devise.labels.run_labels import label_space_for
from devise.model.checkpoint import load_run
from devise.model.export import load
from devise.model.inference import top_labels
from devise.training.runs import read_unseen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("devise_run")
    parser.add_argument("softmax_run")
    args = parser.parse_args()

    devise, softmax = load_run(args.devise_run), load_run(args.softmax_run)
    config = softmax.config
    unseen = set(read_unseen(softmax.folder, config))
    everything = load_dataset(config.data, config.data_root, config.val_split, image_size=config.image_size, cache_dir=config.cache_dir,
                              progress=False)
    seen_label = torch.tensor([c not in unseen for c in everything.class_ids])
    unseen_columns, seen_columns = (~seen_label).nonzero()[:, 0], seen_label.nonzero()[:, 0]
    unseen_image = ~seen_label[everything.labels]
    targets = everything.subset(unseen_image.nonzero()[:, 0])
    labels = everything.labels[unseen_image]

    own = devise.label_space().embed(everything.class_names, everything.class_ids)  # as the run reads labels
    outputs = {"DeViSE": load(devise.folder).dataset_outputs(targets, progress=False),
               "ConSE": load(softmax.folder).dataset_outputs(targets, progress=False)}
    outputs["softmax"] = outputs["ConSE"]
    top = {kind: top_labels(kind, out, own[seen_columns], own[unseen_columns], SIMILARITY_TOP)[1]
           for kind, out in outputs.items()}
    top = {kind: (seen_columns if kind == "softmax" else unseen_columns)[index] for kind, index in top.items()}

    others = {"own space, not centred": devise.config, "MiniLM, bare names": replace(devise.config, prompts=None),
              "MiniLM, default prompts": replace(devise.config, prompts="default"),
              "GloVe 6B 50-d (the paper's)": replace(devise.config, vectors="glove-6b-50d", prompts=None)}
    if not devise.config.centre_labels:
        del others["own space, not centred"]
    yardsticks = {"own space": own, **{name: label_space_for(settings).embed(everything.class_names, everything.class_ids)
                                       for name, settings in others.items()}}
    for name, vectors in yardsticks.items():
        vectors = F.normalize(vectors.float(), dim=1)
        control = similarity_control(vectors[unseen_columns], vectors[seen_columns])
        lift = {kind: float(semantic_similarity(vectors[labels], vectors[index]).mean()) - control
                for kind, index in top.items()}
        print(f"{name}: control {control:.3f}; lift DeViSE {lift['DeViSE']:+.3f}, ConSE {lift['ConSE']:+.3f}, "
              f"softmax {lift['softmax']:+.3f}; ratio to softmax's: DeViSE {lift['DeViSE'] / lift['softmax']:.1f}x, "
              f"ConSE {lift['ConSE'] / lift['softmax']:.1f}x", flush=True)


if __name__ == "__main__":
    main()
