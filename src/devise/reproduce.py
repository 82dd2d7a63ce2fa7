"""The whole experiment in one call: softmax CNN, DeViSE, hit@k, zero-shot, report, summary.

Presets hold the settings. "cpu" is tuned for a 2-core CPU with native bf16 (about 10 minutes),
"cpu-long" for a stronger result within an hour on the same machine, "gpu" for one GPU; `--budget`
fits any of them into the minutes a user has on the host at hand; "paper" follows the student paper
(the plain CNN at 64 px, dropout 0.4 with augmentation, Adam with decay, hinge loss with margin
0.1); "demo" runs the same pipeline on the generated toy set in about a minute.

Without a separate target dataset, zero-shot runs on a held-out split: `unseen` classes of the
training dataset are removed from training and named afterwards.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from devise import budget as budgets
from devise.config import TrainConfig
from devise.errors import DeviseError
from devise.evaluation import evaluate_run
from devise.hardware import Distributed, describe_host, distributed, host_line, use_bf16
from devise.report import write_report
from devise.train import load_data, load_run_config, read_metrics, train
from devise.zeroshot import run_zero_shot

PRESETS: dict[str, dict] = {
    "cpu": {
        "common": dict(data="tiny-imagenet", image_size=32, model="cnn", width=32, hidden=512, dropout=0.2,
                       batch_size=256, crop_padding=4, flip=True),
        "softmax": dict(epochs=10, optimizer="sgd", lr=0.2, weight_decay=5e-4, schedule="onecycle",
                        label_smoothing=0.1),
        "devise": dict(epochs=6, freeze_epochs=1, loss="hinge", margin=0.1, optimizer="adam", lr=1e-3,
                       weight_decay=5e-5, schedule="cosine"),
        "unseen": 20, "vocabulary": "target",
    },
    "cpu-long": {
        "common": dict(data="tiny-imagenet", image_size=64, model="resnet9", width=32, stem_pool=True, hidden=512,
                       dropout=0.2, batch_size=256, crop_padding=8, flip=True),
        "softmax": dict(epochs=15, small_epochs=5, small_size=32, optimizer="sgd", lr=0.2, weight_decay=5e-4,
                        schedule="onecycle", label_smoothing=0.1),
        "devise": dict(epochs=6, freeze_epochs=6, loss="crossentropy", temperature=0.05, embed_hidden=1024,
                       vectors="minilm", distill=0.8, distill_temperature=3.0, optimizer="adam", lr=1e-3,
                       weight_decay=5e-5, schedule="cosine"),
        "unseen": 20, "vocabulary": "target",
    },
    "gpu": {  # one GPU: the default CNN at twice the width on the full 64 px images, all data on the GPU
        "common": dict(data="tiny-imagenet", image_size=64, model="resnet9", width=64, hidden=512, dropout=0.2,
                       batch_size=512, crop_padding=8, flip=True, eval_batch_size=2000),
        "softmax": dict(epochs=30, optimizer="sgd", lr=0.4, weight_decay=5e-4, schedule="onecycle",
                        label_smoothing=0.1),
        "devise": dict(epochs=6, freeze_epochs=6, loss="crossentropy", temperature=0.05, embed_hidden=1024,
                       vectors="minilm", distill=0.8, distill_temperature=3.0, optimizer="adam", lr=1e-3,
                       weight_decay=5e-5, schedule="cosine"),
        "unseen": 20, "vocabulary": "target",
    },
    "paper": {
        "common": dict(data="tiny-imagenet", image_size=64, model="cnn", width=32, hidden=512, dropout=0.4,
                       batch_size=128, crop_padding=8, flip=True, jitter=0.2),
        "softmax": dict(epochs=20, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="step", step_epochs=7,
                        step_gamma=0.3),
        "devise": dict(epochs=10, loss="hinge", margin=0.1, optimizer="adam", lr=1e-4, weight_decay=0.0,
                       schedule="step", step_epochs=4, step_gamma=0.3),
        "unseen": 20, "vocabulary": "target,train",
    },
    "demo": {
        "common": dict(data="toy", image_size=32, model="cnn", width=16, hidden=64, dropout=0.1, batch_size=32,
                       crop_padding=2, flip=True, bf16=False),
        "softmax": dict(epochs=5, optimizer="adam", lr=3e-3, weight_decay=0.0, schedule="cosine"),
        "devise": dict(epochs=4, freeze_epochs=1, loss="rank", margin=0.1, optimizer="adam", lr=3e-3,
                       weight_decay=0.0, schedule="cosine"),
        "unseen": 8, "vocabulary": "target,train",
    },
}

# The student paper's reported figures, to print beside ours (never as ours).
PAPER = {"softmax top-1": 0.25, "DeViSE hit@5": 0.31, "DeViSE similarity": 0.63, "softmax similarity": 0.31,
         "control similarity": 0.1}


def get_preset(name: str) -> dict:
    if name not in PRESETS:
        raise DeviseError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_settings(preset: str, head: str) -> dict:
    """A preset's training settings for one head ("softmax" or "embedding"), as TrainConfig fields;
    also what `devise train --preset NAME` starts from."""
    settings = get_preset(preset)
    return dict(settings["common"], **settings["devise" if head == "embedding" else "softmax"], head=head)


def preset_configs(preset: str, out: Path, data_root: str | None, target: str, download: bool,
                   cache_dir: str | None = None) -> tuple[TrainConfig, TrainConfig]:
    unseen = get_preset(preset)["unseen"] if target == "unseen" else 0
    where = dict(data_root=data_root, download=download, cache_dir=cache_dir, unseen=unseen)
    softmax = TrainConfig(**preset_settings(preset, "softmax"), **where, out=str(out / "softmax"))
    devise = TrainConfig(**preset_settings(preset, "embedding"), **where, init=softmax.out, out=str(out / "devise"))
    return softmax, devise


def train_or_continue(config: TrainConfig, progress: bool, device: str) -> None:
    """Train, or resume a run an earlier call left unfinished (as it began: its own config.toml),
    or keep a finished one."""
    folder = Path(config.out)
    if (folder / "summary.json").is_file() and json.loads((folder / "summary.json").read_text())["epochs"] >= config.epochs:
        return
    if (folder / "checkpoint.pt").is_file():
        train(load_run_config(folder), resume=True, progress=progress, device=device)
    else:
        train(config, progress=progress, device=device)


def fit_budget(minutes: float, started: float, stages: list[TrainConfig], unseen: int, device: torch.device,
               dist: Distributed, progress: bool) -> tuple[budgets.Plan, budgets.Speeds, budgets.Workload]:
    """Measure this host's speed on the preset's first steps and size both stages' epochs to end
    within `minutes` of `started`; says what it chose and why."""
    softmax = replace(stages[0], bf16=use_bf16(device, stages[0].bf16))
    train_set, small_set, val_set = load_data(softmax, progress and dist.is_main, dist)
    speeds = budgets.measure_speeds(softmax, train_set, small_set, val_set, device, dist)
    zero_shot_images = len(val_set) * (train_set.num_classes + unseen) / train_set.num_classes
    work = budgets.Workload(len(train_set), len(val_set), round(2 * len(val_set) + 2 * zero_shot_images))
    left = dist.broadcast(minutes * 60 - (time.perf_counter() - started))  # every process sizes alike
    plan = budgets.plan_budget(left, stages, speeds, work, softmax.batch_size)
    if dist.is_main:
        print(budgets.describe(plan, speeds, minutes * 60, host_line(describe_host(device))), flush=True)
    return plan, speeds, work


def refit_budget(minutes: float, started: float, speeds: budgets.Speeds, work: budgets.Workload,
                 first: TrainConfig, second: TrainConfig, dist: Distributed) -> budgets.Plan:
    """Size the second stage for the time left, at the speed the first stage really ran."""
    rows = [r for r in read_metrics(Path(first.out) / "metrics.csv") if r["epoch"] > first.small_epochs]
    speeds = budgets.rescale(speeds, statistics.median(r["images_per_second"] for r in rows))
    left = dist.broadcast(minutes * 60 - (time.perf_counter() - started))
    plan = budgets.plan_budget(left, [second], speeds, work, second.batch_size, at_least_one_batch=True)
    if dist.is_main:
        print(f"budget: {left / 60:.1f} min left after the first stage, which trained at {speeds.train:.0f} "
              f"images/s; the second stage trains on {plan.fraction:.1%} of each epoch's images", flush=True)
    return plan


def reproduce(preset: str = "cpu", data_root: str | None = None, out: str | Path = "runs/reproduce",
              target: str = "unseen", target_root: str | None = None, download: bool = False,
              cache_dir: str | None = None, progress: bool = True, device: str = "auto",
              budget: float | None = None, overrides: dict | None = None) -> dict | None:
    """Train both models, evaluate everything, write `report.html`, `summary.json` and
    `summary.md` into `out`; returns the summary.

    `device` is auto, cpu, cuda or cuda:N. With `budget` (minutes), the host's speed is measured
    first and every epoch of both stages cut to the share of its images that fits (`devise.budget`).
    `overrides` are settings laid over both stages' preset settings (a shorter smoke run, say).
    Under torchrun every process trains; rank 0 alone evaluates and writes, and the others
    return None.
    """
    started = time.perf_counter()
    out = Path(out)
    dist, device = distributed(device)
    if budget is not None and budget <= 0:
        raise DeviseError("--budget must be a positive number of minutes")
    softmax, devise = preset_configs(preset, out, data_root, target, download, cache_dir)
    if overrides:
        softmax, devise = replace(softmax, **overrides), replace(devise, **overrides)
    shares = None
    if budget is not None:
        plan, speeds, work = fit_budget(budget, started, [softmax, devise], softmax.unseen, device, dist, progress)
        softmax = replace(softmax, **plan.overrides())
    train_or_continue(softmax, progress, str(device))
    if budget is not None:
        second = refit_budget(budget, started, speeds, work, softmax, devise, dist)
        devise = replace(devise, **second.overrides())
        shares = [plan.fraction, second.fraction]
    train_or_continue(devise, progress, str(device))
    if not dist.is_main:
        return None
    hits = {name: evaluate_run(out / name, progress=progress, device=str(device)) for name in ("softmax", "devise")}
    zero_shot = run_zero_shot([out / "devise", out / "softmax"], target, target_root, PRESETS[preset]["vocabulary"],
                              out=out / f"zeroshot-{target}", progress=progress, download=download,
                              device=str(device))
    minutes = (time.perf_counter() - started) / 60
    write_report([out / "softmax", out / "devise"], out / "report.html", f"devise reproduce --preset {preset}",
                 [out / f"zeroshot-{target}"])
    summary = summarise(preset, hits, zero_shot, minutes, {**describe_host(device), "processes": dist.world_size},
                        budget, shares)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(summary_table(summary))
    return summary


def summarise(preset: str, hits: dict, zero_shot: dict, minutes: float, host: dict, budget: float | None = None,
              shares: list[float] | None = None) -> dict:
    models = {m["kind"]: m for m in zero_shot["models"].values()}
    return {
        "preset": preset, "wall_minutes": round(minutes, 1), "host": host,
        "budget_minutes": budget, "epoch_shares": shares or [1.0, 1.0],
        "classes_trained": hits["softmax"]["classes"],
        "softmax top-1": hits["softmax"]["hit@1"], "softmax top-5": hits["softmax"]["hit@5"],
        "DeViSE hit@1": hits["devise"]["hit@1"], "DeViSE hit@5": hits["devise"]["hit@5"],
        "DeViSE hit@10": hits["devise"]["hit@10"], "softmax hit@10": hits["softmax"]["hit@10"],
        "zero-shot target": zero_shot["target"], "zero-shot classes": zero_shot["target_classes"],
        "zero-shot": {kind: {k: m[k] for k in m if k.startswith("hit@") or k in (
            "per_class_top1", "similarity", "lift", "gzsl_seen", "gzsl_unseen", "gzsl_harmonic")}
            for kind, m in models.items()},
        "control similarity": zero_shot["control_similarity"], "label space": zero_shot["label_space"],
    }


def summary_table(summary: dict) -> str:
    """A Markdown table: our figures beside the paper's, which are labelled as the paper's."""
    zs = summary["zero-shot"]
    rows = [
        ("softmax top-1 (val, trained classes)", summary["softmax top-1"], PAPER["softmax top-1"]),
        ("DeViSE hit@5 (val, trained classes)", summary["DeViSE hit@5"], PAPER["DeViSE hit@5"]),
        ("softmax hit@5 / hit@10", f"{summary['softmax top-5']:.3f} / {summary['softmax hit@10']:.3f}", "-"),
        ("DeViSE hit@1 / hit@10", f"{summary['DeViSE hit@1']:.3f} / {summary['DeViSE hit@10']:.3f}", "-"),
    ]
    for kind in ("DeViSE", "ConSE", "softmax"):
        if kind in zs:
            m = zs[kind]
            rows.append((f"zero-shot {kind} hit@1 / 2 / 5 / 10 / 20",
                         " / ".join(f"{m[f'hit@{k}']:.3f}" for k in (1, 2, 5, 10, 20)), "-"))
    for kind in ("DeViSE", "ConSE", "softmax"):
        if kind in zs:
            paper = PAPER.get(f"{kind} similarity", "-")
            rows.append((f"zero-shot similarity {kind} (lift)", f"{zs[kind]['similarity']:.3f} ({zs[kind]['lift']:+.3f})",
                         paper))
    rows.append(("control similarity (random label pairs)", summary["control similarity"], PAPER["control similarity"]))
    if "gzsl_harmonic" in zs.get("DeViSE", {}):
        for kind in ("DeViSE", "ConSE", "softmax"):
            m = zs[kind]
            rows.append((f"GZSL {kind} S / U / H", f"{m['gzsl_seen']:.3f} / {m['gzsl_unseen']:.3f} / "
                                                   f"{m['gzsl_harmonic']:.3f}", "-"))
    wall = f"{summary['wall_minutes']:.1f}"
    if summary.get("budget_minutes"):
        shares = summary["epoch_shares"]
        cut = "nothing cut" if min(shares) >= 1 else f"epochs cut to {shares[0]:.1%} / {shares[1]:.1%} of their images"
        wall += f" (budget {summary['budget_minutes']:g}: {cut})"
    rows.append(("wall time, minutes", wall, "-"))

    def fmt(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = [f"| measure (preset {summary['preset']}, label space {summary['label space']}, zero-shot on "
             f"{summary['zero-shot target']}: {summary['zero-shot classes']} classes) | ours | the paper's |",
             "|---|---|---|"]
    lines += [f"| {name} | {fmt(ours)} | {fmt(paper)} |" for name, ours, paper in rows]
    if "host" in summary:
        processes = summary["host"].get("processes", 1)
        lines.append(f"\nHost: {host_line(summary['host'])}" + (f", {processes} processes" if processes > 1 else "") + ".")
    return "\n".join(lines) + "\n"
