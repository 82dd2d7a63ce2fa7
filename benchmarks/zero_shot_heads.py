"""Which DeViSE head names unseen classes best? Heads trained on one softmax run's frozen features.

A softmax run trained with `--unseen K` turns every image into a feature vector once (its body,
no augmentation): the training images of its seen classes, and the validation images of all
classes. DeViSE heads (a loss, a label space, a linear layer or an MLP) are then trained on the
same seen-class features for the same epochs and scored the way `devise zeroshot --target
unseen` scores models: hit@k over the K held-out labels, the semantic similarity of the top 3
and its lift over the random-pair control, and generalised zero-shot (S, U, H, calibrated H).
The softmax run itself and ConSE from it are scored alike, in each label space. With the body
fixed, differences between heads are the head's, loss's and label space's doing: a cheap screen
(seconds to a minute per head) before a preset's DeViSE stage is changed and trained in full.

`--ceiling` also trains each head on every class, the held-out ones included, and scores it the
same way: what these features give when the held-out classes are not unseen at all, a ceiling
for any zero-shot head on the same features.

Prints one JSON line per head.
Usage: python benchmarks/zero_shot_heads.py SOFTMAX_RUN [--epochs 6] [--heads NAME,NAME] [--ceiling]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from devise.data import load_dataset
from devise.evaluation.metrics import generalised_figures, hit_at_k, ranking_metrics, similarity_control
from devise.hardware import autocast, inference_bf16
from devise.labels.run_labels import label_space_for
from devise.model.checkpoint import load_run
from devise.model.inference import conse_vectors, dataset_features
from devise.training.losses import get_loss
from devise.training.runs import read_unseen

# name: (label space, prompts, loss, MLP hidden units or 0 for one linear layer, margin, centred)
# Centred: every label vector less the mean of the training labels' (then unit length again), so
# that the direction all labels share stops counting in their cosines.
HEADS = {
    "hinge glove linear (the cpu preset)": ("glove-6b-50d", None, "hinge", 0, 0.1, False),
    "hinge glove mlp": ("glove-6b-50d", None, "hinge", 1024, 0.1, False),
    "cosine glove linear": ("glove-6b-50d", None, "cosine", 0, 0.1, False),
    "crossentropy glove linear": ("glove-6b-50d", None, "crossentropy", 0, 0.1, False),
    "hinge minilm linear": ("minilm", None, "hinge", 0, 0.1, False),
    "hinge minilm+prompts linear": ("minilm", "default", "hinge", 0, 0.1, False),
    "hinge minilm+prompts mlp": ("minilm", "default", "hinge", 1024, 0.1, False),
    "crossentropy minilm+prompts mlp": ("minilm", "default", "crossentropy", 1024, 0.1, False),
    "hinge glove linear centred": ("glove-6b-50d", None, "hinge", 0, 0.1, True),
    "hinge glove mlp centred": ("glove-6b-50d", None, "hinge", 1024, 0.1, True),
    "hinge minilm+prompts linear centred": ("minilm", "default", "hinge", 0, 0.1, True),
    "hinge minilm linear centred": ("minilm", None, "hinge", 0, 0.1, True),
    "hinge minilm+prompts linear margin 0.3": ("minilm", "default", "hinge", 0, 0.3, False),
    "rank minilm+prompts linear": ("minilm", "default", "rank", 0, 0.1, False),
    "hinge minilm+hypernym linear": ("minilm", "hypernym", "hinge", 0, 0.1, False),
    "hinge minilm+hypernym linear margin 0.2": ("minilm", "hypernym", "hinge", 0, 0.2, False),
    "rank minilm+hypernym linear": ("minilm", "hypernym", "rank", 0, 0.1, False),
    "crossentropy minilm+hypernym linear": ("minilm", "hypernym", "crossentropy", 0, 0.1, False),
    "hinge minilm+hypernym mlp": ("minilm", "hypernym", "hinge", 1024, 0.1, False),
    "crossentropy minilm+hypernym mlp": ("minilm", "hypernym", "crossentropy", 1024, 0.1, False),
    "hinge minilm+hypernym linear centred": ("minilm", "hypernym", "hinge", 0, 0.1, True),
    "crossentropy minilm+hypernym linear centred": ("minilm", "hypernym", "crossentropy", 0, 0.1, True),
}


def features_of(run, data) -> tuple[torch.Tensor, torch.Tensor]:
    """(body features, the run's logits) of every image."""
    bf16 = inference_bf16(run.config.bf16, run.device)
    features = dataset_features(run.model, run.preprocess, data, device=run.device, bf16=bf16, progress=False)
    with torch.no_grad(), autocast(run.device, bf16):
        return features, run.model.head(features).float()


def fit_head(features: torch.Tensor, labels: torch.Tensor, label_vectors: torch.Tensor, loss: str, hidden: int,
             margin: float, epochs: int) -> nn.Module:
    """A head trained as the cpu preset trains DeViSE's (Adam 1e-3, cosine schedule, weight decay
    5e-5, batch 256, dropout 0.2 before it), on fixed features."""
    torch.manual_seed(0)
    width = label_vectors.shape[1]
    project = nn.Linear(features.shape[1], width) if not hidden else nn.Sequential(
        nn.Linear(features.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, width))
    head = nn.Sequential(nn.Dropout(0.2), project)
    loss_fn, generator = get_loss(loss), torch.Generator().manual_seed(0)
    batch = 256
    optimizer = torch.optim.Adam(head.parameters(), 1e-3, weight_decay=5e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * (len(features) // batch))
    for _ in range(epochs):
        head.train()
        order = torch.randperm(len(features))
        for start in range(0, len(features) - batch + 1, batch):
            rows = order[start : start + batch]
            out = F.normalize(head(features[rows]), dim=1)
            value = loss_fn(out, label_vectors, labels[rows], margin=margin, generator=generator, temperature=0.05)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            schedule.step()
    return head.eval()


@torch.no_grad()
def head_queries(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """A trained head's unit query vectors for these features."""
    return F.normalize(head(features), dim=1)


def scored(name: str, queries: torch.Tensor | None, logits: torch.Tensor, everything, seen_label: torch.Tensor,
           vectors: torch.Tensor, extra: dict) -> dict:
    """The zero-shot figures of one model from its query vectors on every validation image (None:
    the softmax model, which ranks its own labels by `logits`)."""
    unseen_columns, seen_columns = (~seen_label).nonzero()[:, 0], seen_label.nonzero()[:, 0]
    unseen_image = ~seen_label[everything.labels]
    target_labels = torch.searchsorted(unseen_columns, everything.labels[unseen_image])
    true_vectors = vectors[everything.labels[unseen_image]]
    target_vectors = vectors[unseen_columns]
    result = {"head": name, **extra}
    if queries is None:
        top = logits[unseen_image].topk(min(20, logits.shape[1]), dim=1).indices  # over the seen labels
        figures = ranking_metrics(top, vectors[seen_columns], torch.full((len(unseen_columns),), -1),
                                  target_labels, true_vectors)
        scores = torch.full((len(everything), len(seen_label)), float("-inf"))
        scores[:, seen_columns] = logits
        gzsl = generalised_figures(scores, everything.labels, seen_label, calibrate=False)
        seen = hit_at_k(logits[~unseen_image], torch.searchsorted(seen_columns, everything.labels[~unseen_image]), (1, 5))
    else:
        top = (queries[unseen_image] @ target_vectors.T).topk(min(20, len(target_vectors)), dim=1).indices
        figures = ranking_metrics(top, target_vectors, torch.arange(len(unseen_columns)), target_labels, true_vectors)
        gzsl = generalised_figures(queries @ vectors.T, everything.labels, seen_label)
        seen_scores = queries[~unseen_image] @ vectors[seen_columns].T
        seen = hit_at_k(seen_scores, torch.searchsorted(seen_columns, everything.labels[~unseen_image]), (1, 5))
    control = similarity_control(target_vectors, vectors[seen_columns])
    result.update({f"zs_{k}": round(v, 3) for k, v in figures.items() if k.startswith("hit@")})
    result.update({"lift": round(figures["similarity"] - control, 3), "seen_hit@1": round(seen["hit@1"], 3),
                   "seen_hit@5": round(seen["hit@5"], 3)})
    result.update({k: round(v, 3) for k, v in gzsl.items()})
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("softmax_run")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--heads", help="comma list of head names (default: all)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also train each head on every class, the held-out ones included")
    args = parser.parse_args()

    run = load_run(args.softmax_run)
    config = run.config
    unseen = read_unseen(run.folder, config)
    train = load_dataset(config.data, config.data_root, "train", image_size=config.image_size, cache_dir=config.cache_dir, progress=False)
    everything = load_dataset(config.data, config.data_root, config.val_split, image_size=config.image_size, cache_dir=config.cache_dir,
                              progress=False)
    seen_label = torch.tensor([c not in set(unseen) for c in everything.class_ids])
    seen_rows = seen_label[train.labels]
    train_labels = torch.searchsorted(seen_label.nonzero()[:, 0], train.labels[seen_rows])
    train_features, _ = features_of(run, train.subset(seen_rows))
    if args.ceiling:
        held_out = train.subset(~seen_rows)
        every_features = torch.cat([train_features, features_of(run, held_out)[0]])
        every_labels = torch.cat([train.labels[seen_rows], held_out.labels])
    val_features, val_logits = features_of(run, everything)
    chosen = args.heads.split(",") if args.heads else list(HEADS)
    spaces: dict = {}
    for name in chosen:
        source, prompts, loss, hidden, margin, centred = HEADS[name]
        if (source, prompts, centred) not in spaces:
            space = label_space_for(replace(config, vectors=source, prompts=prompts, head="embedding"))
            vectors = space.embed(everything.class_names, everything.class_ids)
            if centred:
                vectors = F.normalize(vectors - vectors[seen_label].mean(dim=0), dim=1)
            spaces[(source, prompts, centred)] = vectors
            label = f"{source}{f'+{prompts} prompts' if prompts else ''}{', centred' if centred else ''}"
            for baseline, queries in (("softmax", None), ("ConSE T=10", conse_vectors(val_logits, vectors[seen_label]))):
                print(json.dumps(scored(baseline, queries, val_logits, everything, seen_label, vectors,
                                        {"space": label})), flush=True)
        vectors = spaces[(source, prompts, centred)]
        started = time.perf_counter()
        head = fit_head(train_features, train_labels, vectors[seen_label], loss, hidden, margin, args.epochs)
        queries = head_queries(head, val_features)
        print(json.dumps(scored(name, queries, val_logits, everything, seen_label, vectors,
                                {"seconds": round(time.perf_counter() - started, 1)})), flush=True)
        if args.ceiling:
            head = fit_head(every_features, every_labels, vectors, loss, hidden, margin, args.epochs)
            queries = head_queries(head, val_features)
            print(json.dumps(scored(f"{name}, trained on every class (the ceiling)", queries, val_logits,
                                    everything, seen_label, vectors, {})), flush=True)


if __name__ == "__main__":
    main()
