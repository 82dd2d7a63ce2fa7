"""The whole experiment in one call: softmax CNN, DeViSE, hit@k, zero-shot, report, summary.

A preset (a TOML file of `devise/presets`: cpu, cpu-long, gpu, paper, pretrained, demo) holds the settings of both
stages; `--budget` fits any of them into the minutes a user has on the host at hand.

Without a separate target dataset, zero-shot runs on a held-out split: `unseen` classes of the
training dataset are removed from training and named afterwards.
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from devise import files
from devise.config import TrainConfig, own_body, preset_file, preset_settings
from devise.data import ImageSet
from devise.data.features import feature_batch
from devise.data.pipeline import NO_AUGMENT, Augment, BatchLoader
from devise.errors import DeviseError
from devise.evaluation.evaluate import evaluate_run
from devise.evaluation.zeroshot import ZeroShotRequest, run_zero_shot
from devise.experiment import budget as budgets
from devise.experiment.report import write_report
from devise.hardware import Distributed, autocast, describe_host, distributed, freed_memory_kept, host_line, use_bf16
from devise.model.checkpoint import has_checkpoint, load_config
from devise.model.network import build_network, input_pipeline, with_image_size
from devise.model.pretrained import is_pretrained_name
from devise.training import runs
from devise.training.loop import held_out_classes, load_data, train
from devise.training.objectives import objective_for
from devise.training.steps import body_features, make_optimizer, training_step

log = logging.getLogger(__name__)

# The student paper's reported figures, to print beside ours (never as ours).
PAPER = {"softmax top-1": 0.25, "DeViSE hit@5": 0.31, "DeViSE similarity": 0.63, "softmax similarity": 0.31,
         "control similarity": 0.1}


def preset_configs(preset: str, out: Path, data_root: str | None, target: str, download: bool,
                   cache_dir: str | None = None) -> tuple[TrainConfig, TrainConfig]:
    """The two stages of a preset: the softmax run, and DeViSE warm-started from it."""
    unseen = preset_file(preset)["unseen"] if target == "unseen" else 0
    where = dict(data_root=data_root, download=download, cache_dir=cache_dir, unseen=unseen)
    softmax = TrainConfig(**preset_settings(preset, "softmax"), **where, out=str(out / "softmax"))
    devise = TrainConfig(**preset_settings(preset, "embedding"), **where, init=softmax.out, out=str(out / "devise"))
    return softmax, devise


def train_or_continue(config: TrainConfig, progress: bool, device: str) -> None:
    """Train, or resume a run an earlier call left unfinished (as it began: its own config.toml),
    or keep a finished one."""
    folder = Path(config.out)
    done = runs.read_summary(folder)
    if done and done["epochs"] >= config.epochs:
        log.info(f"{folder} is trained already ({done['epochs']} epochs): kept")
        return
    if has_checkpoint(folder):
        train(load_config(folder), resume=True, progress=progress, device=device)
    else:
        train(config, progress=progress, device=device)


# ---------------------------------------------------------------------------------------------
# Measuring this host's speed for a budget

WARMUP_STEPS, TIMED_STEPS = 2, 5


def timed_steps(step, batches, dist: Distributed) -> float:
    """Seconds per step over `TIMED_STEPS` steps after `WARMUP_STEPS` (oneDNN and CUDA pick their
    kernels, the allocator grows); every process waits for the slowest."""
    iterator = itertools.cycle(batches)  # a set smaller than the steps taken is gone through again
    for _ in range(WARMUP_STEPS):
        step(*next(iterator))
    synchronise(dist)
    started = time.perf_counter()
    for _ in range(TIMED_STEPS):
        step(*next(iterator))
    synchronise(dist)
    return (time.perf_counter() - started) / TIMED_STEPS


def synchronise(dist: Distributed) -> None:
    if dist.device.type == "cuda" or torch.cuda.is_initialized():
        torch.cuda.synchronize()
    dist.barrier()


def measure_speeds(config: TrainConfig, train_set: ImageSet, small_set: ImageSet | None, val_set: ImageSet,
                   device: torch.device, dist: Distributed, trains_body: bool = True) -> budgets.Speeds:
    """Time real steps of the preset's softmax model on real batches, then throw the model away. A
    body that no stage trains (a frozen pretrained one) is not timed training."""
    preprocess = input_pipeline(config, train_set.images)
    model, objective = build_network(config, train_set.num_classes).to(device), objective_for(config, None)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model)
    stepper = dist.wrap(model.train())

    def training_batches(data: ImageSet, augment) -> BatchLoader:
        return BatchLoader(data.to(device), config.batch_size, preprocess, shuffle=True, augment=augment,
                           seed=config.seed, shard=(dist.rank, dist.world_size),
                           limit=(WARMUP_STEPS + TIMED_STEPS) * config.batch_size)

    def train_speed(data: ImageSet, augment) -> float:
        def step(images, labels):
            training_step(stepper, objective, optimizer, images, labels, bf16=config.bf16)

        return config.batch_size / timed_steps(step, training_batches(data, augment), dist)

    def frozen_speed() -> float:
        head = dist.wrap(model.head)

        def step(images, labels):
            training_step(head, objective, optimizer, body_features(model, images, config.bf16), labels, bf16=config.bf16)

        model.eval()
        return config.batch_size / timed_steps(step, training_batches(train_set, Augment.of(config)), dist)

    def forward_speed() -> float:
        batch = min(config.eval_batch_size if own_body(config) else feature_batch(config.eval_batch_size, device),
                    len(val_set))
        loader = BatchLoader(val_set.to(device), batch, preprocess, augment=NO_AUGMENT)
        steps = [next(iter(loader))] * (WARMUP_STEPS + TIMED_STEPS)
        model.eval()

        @torch.no_grad()
        def step(images, labels):
            with autocast(device, config.bf16):
                model(images)

        return batch / timed_steps(step, steps, dist)

    def head_speed() -> float:  # on one batch's features, as the class splits of calibration train
        images, labels = next(iter(training_batches(train_set, NO_AUGMENT)))
        model.eval()
        features = body_features(model, images, config.bf16).float()

        def step():
            training_step(model.head, objective, optimizer, features, labels, bf16=False)

        return config.batch_size / timed_steps(step, [()], dist)

    with freed_memory_kept():  # as training runs
        frozen = frozen_speed()
        speeds = [train_speed(train_set, Augment.of(config)) if trains_body else frozen,
                  train_speed(small_set, Augment.of(config, config.small_size)) if small_set is not None else None,
                  frozen, forward_speed(), head_speed()]
    # Every process must size the run alike: rank 0's figures decide.
    return budgets.Speeds(*(dist.broadcast(v) if v is not None else None for v in speeds))


def fit_budget(minutes: float, started: float, stages: list[TrainConfig], unseen: int, device: torch.device,
               dist: Distributed, progress: bool) -> tuple[budgets.Plan, budgets.Speeds, budgets.Workload]:
    """Measure this host's speed on the preset's first steps and size both stages' epochs to end
    within `minutes` of `started`; says what it chose and why."""
    softmax = replace(stages[0], bf16=use_bf16(device, stages[0].bf16))
    talk = progress and dist.is_main
    train_set, small_set, val_set = load_data(softmax, held_out_classes(softmax, talk)[0], talk, dist)
    trains_body = any(stage.freeze_epochs < stage.epochs for stage in stages)
    speeds = measure_speeds(softmax, train_set, small_set, val_set, device, dist, trains_body)
    zero_shot_images = len(val_set) * (train_set.num_classes + unseen) / train_set.num_classes
    # After training: evaluation and zero-shot of both models; through one cached frozen body, the
    # validation images' features are there already and the zero-shot images' are computed once.
    after = zero_shot_images if budgets.cached_features(softmax) else 2 * len(val_set) + 2 * zero_shot_images
    work = budgets.Workload(len(train_set), len(val_set), round(after), train_set.num_classes)
    spent = time.perf_counter() - started
    left = dist.broadcast(minutes * 60 - spent)  # every process sizes alike
    if left <= 0:
        raise DeviseError(f"a budget of {minutes:g} min is too short for this preset on this host: loading the data "
                          f"and measuring its speed took {spent:.0f} s of it")
    plan = budgets.plan_budget(left, stages, speeds, work, batch_size=softmax.batch_size)
    if dist.is_main:
        log.info(budgets.describe(plan, speeds, minutes * 60, host_line(describe_host(device))))
    return plan, speeds, work


def refit_budget(minutes: float, started: float, speeds: budgets.Speeds, work: budgets.Workload,
                 first: TrainConfig, second: TrainConfig, dist: Distributed) -> budgets.Plan:
    """Size the second stage for the time left, at the speed the first stage really ran."""
    rows = [r for r in runs.read_metrics(Path(first.out)) if r["epoch"] > first.small_epochs]
    speeds = budgets.rescale(speeds, statistics.median(r["images_per_second"] for r in rows))
    left = dist.broadcast(minutes * 60 - (time.perf_counter() - started))
    plan = budgets.plan_budget(left, [second], speeds, work, batch_size=second.batch_size, at_least_one_batch=True)
    if dist.is_main:
        log.info(f"budget: {left / 60:.1f} min left after the first stage, which trained at {speeds.train:.0f} "
                 f"images/s; the second stage trains on {plan.fraction:.1%} of each epoch's images")
    return plan


def reproduce(preset: str = "cpu", *, data_root: str | None = None, out: str | Path = "runs/reproduce",
              target: str = "unseen", target_root: str | None = None, download: bool = False,
              cache_dir: str | None = None, progress: bool = True, device: str = "auto",
              budget: float | None = None, overrides: dict | None = None) -> dict | None:
    """Train both models, evaluate everything, write `report.html`, `summary.json` and
    `summary.md` into `out`; returns the summary.

    `device` is auto, cpu, cuda or cuda:N. With `budget` (minutes), the host's speed is measured
    first and every epoch of both stages cut to the share of its images that fits (`devise.experiment.budget`).
    `overrides` are settings laid over both stages' preset settings (a shorter smoke run, say).
    Under torchrun every process trains; rank 0 alone evaluates and writes, and the others
    return None.
    """
    started = time.perf_counter()
    out = Path(out)
    dist, device = distributed(device)
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise DeviseError(f"--budget must be a positive number of minutes, not {budget:g}")
    softmax, devise = preset_configs(preset, out, data_root, target, download, cache_dir)
    softmax, devise = with_image_size(softmax), with_image_size(devise)
    if overrides:
        softmax, devise = replace(softmax, **overrides), replace(devise, **overrides)
    shares = None
    if budget is not None:
        plan, speeds, work = fit_budget(budget, started, [softmax, devise], softmax.unseen, device, dist, progress)
        softmax = replace(softmax, **plan.overrides())
    log.info(f"stage 1/5: training the softmax model into {softmax.out}")
    train_or_continue(softmax, progress, str(device))
    if budget is not None and budgets.cached_features(softmax) and budgets.cached_features(devise):
        # one frozen body: its features of the first stage's images are paid for; the head trains on them all
        devise = replace(devise, epoch_images=softmax.epoch_images, val_images=softmax.val_images)
        shares = [plan.fraction, plan.fraction]
    elif budget is not None:
        second = refit_budget(budget, started, speeds, work, softmax, devise, dist)
        devise = replace(devise, **second.overrides())
        shares = [plan.fraction, second.fraction]
    log.info(f"stage 2/5: training DeViSE into {devise.out}, warm-started from the softmax model")
    train_or_continue(devise, progress, str(device))
    if not dist.is_main:
        return None
    log.info("stage 3/5: evaluating hit@k of both models")
    # Evaluated in the precision the models trained in: the same arithmetic, and a frozen body's cached features reused.
    precision = "bf16" if use_bf16(device, softmax.bf16) else "float32"
    hits = {name: evaluate_run(out / name, progress=progress, device=str(device), precision=precision)
            for name in ("softmax", "devise")}
    log.info(f"stage 4/5: zero-shot on {target}: DeViSE, ConSE and softmax")
    # A body devise knows by name is also an ImageNet classifier: ConSE with no training, beside the heads.
    stock = [softmax.body] if is_pretrained_name(softmax.body) else []
    zero_shot = run_zero_shot(ZeroShotRequest(
        [out / "devise", out / "softmax", *stock], target, target_root, preset_file(preset)["vocabulary"],
        out=out / f"zeroshot-{target}", progress=progress, download=download, device=str(device),
        image_size=softmax.image_size, precision=precision))
    minutes = (time.perf_counter() - started) / 60
    log.info(f"stage 5/5: writing {out / 'report.html'} and {out / 'summary.md'} ({minutes:.1f} min so far)")
    summary = summarise(preset, hits, zero_shot, minutes, {**describe_host(device), "processes": dist.world_size},
                        budget, shares, data=softmax.data)
    write_report([out / "softmax", out / "devise"], out / "report.html", title=f"devise reproduce --preset {preset}",
                 zero_shot=[out / f"zeroshot-{target}"], summary=summary_table(summary))
    runs.write_summary(out, summary)
    files.write_file(out / "summary.md", summary_table(summary), what="the experiment's summary")
    return summary


def summarise(preset: str, hits: dict, zero_shot: dict, minutes: float, host: dict, budget: float | None = None,
              shares: list[float] | None = None, *, data: str = "tiny-imagenet") -> dict:
    models = {m["kind"] + (" (ImageNet classifier, no training)" if m.get("stock") else ""): m
              for m in zero_shot["models"].values()}
    return {
        "preset": preset, "data": data, "wall_minutes": round(minutes, 1), "host": host,
        "budget_minutes": budget, "epoch_shares": shares or [1.0, 1.0],
        "classes_trained": hits["softmax"]["classes"],
        "softmax top-1": hits["softmax"]["hit@1"], "softmax top-5": hits["softmax"]["hit@5"],
        "DeViSE hit@1": hits["devise"]["hit@1"], "DeViSE hit@5": hits["devise"]["hit@5"],
        "DeViSE hit@10": hits["devise"]["hit@10"], "softmax hit@10": hits["softmax"]["hit@10"],
        "zero-shot target": zero_shot["target"], "zero-shot classes": zero_shot["target_classes"],
        "zero-shot": {kind: {k: m[k] for k in m if k.startswith(("hit@", "hp@", "gzsl_")) or k in (
            "per_class_top1", "similarity", "lift", "calibration", "body")} for kind, m in models.items()},
        "control similarity": zero_shot["control_similarity"], "label space": zero_shot["label_space"],
    }


def figures_name(figures: dict) -> str:
    """What a model's figures on the target may be called: "zero-shot" only where its body never
    trained on a target class; "transfer" where it trained on all of them (an ImageNet body on
    Tiny ImageNet's held-out classes: held out of the head, seen by the body)."""
    regime = figures.get("body", {}).get("regime", "zero-shot")
    return {"zero-shot": "zero-shot", "transfer": "transfer (body saw these classes):"}.get(regime, f"{regime}:")


def summary_table(summary: dict) -> str:
    """A Markdown table: our figures beside the paper's, which are labelled as the paper's; a run on
    another dataset (the demo's toy set) has no paper's column, since nothing there compares."""
    zs = summary["zero-shot"]
    rows = [
        ("softmax top-1 (val, trained classes)", summary["softmax top-1"], PAPER["softmax top-1"]),
        ("DeViSE hit@5 (val, trained classes)", summary["DeViSE hit@5"], PAPER["DeViSE hit@5"]),
        ("softmax hit@5 / hit@10", f"{summary['softmax top-5']:.3f} / {summary['softmax hit@10']:.3f}", "-"),
        ("DeViSE hit@1 / hit@10", f"{summary['DeViSE hit@1']:.3f} / {summary['DeViSE hit@10']:.3f}", "-"),
    ]
    for kind, m in zs.items():
        rows.append((f"{figures_name(m)} {kind} hit@1 / 2 / 5 / 10 / 20",
                     " / ".join(f"{m[f'hit@{k}']:.3f}" for k in (1, 2, 5, 10, 20)), "-"))
    for kind, m in zs.items():
        paper = PAPER.get(f"{kind} similarity", "-")
        rows.append((f"{figures_name(m)} similarity {kind} (lift)", f"{m['similarity']:.3f} ({m['lift']:+.3f})", paper))
    rows.append(("control similarity (random label pairs)", summary["control similarity"], PAPER["control similarity"]))
    if "gzsl_harmonic" in zs.get("DeViSE", {}):
        for kind, m in zs.items():
            rows.append((f"GZSL {kind} S / U / H", f"{m['gzsl_seen']:.3f} / {m['gzsl_unseen']:.3f} / "
                                                   f"{m['gzsl_harmonic']:.3f}", "-"))
        for kind, m in zs.items():
            if "gzsl_cal_harmonic" in m:
                rows.append((f"GZSL {kind} calibrated S / U / H, {m.get('calibration', 'seen share')} constant "
                             "(AUSUC; best H on the curve)",
                             f"{m['gzsl_cal_seen']:.3f} / {m['gzsl_cal_unseen']:.3f} / {m['gzsl_cal_harmonic']:.3f} "
                             f"({m['gzsl_ausuc']:.3f}; {m['gzsl_best_harmonic']:.3f})", "-"))
    wall = f"{summary['wall_minutes']:.1f}"
    if summary.get("budget_minutes"):
        shares = summary["epoch_shares"]
        cut = "nothing cut" if min(shares) >= 1 else f"epochs cut to {shares[0]:.1%} / {shares[1]:.1%} of their images"
        wall += f" (budget {summary['budget_minutes']:g}: {cut})"
    rows.append(("wall time, minutes", wall, "-"))

    def fmt(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    measure = (f"measure (preset {summary['preset']}, label space {summary['label space']}, zero-shot on "
               f"{summary['zero-shot target']}: {summary['zero-shot classes']} classes)")
    if summary.get("data", "tiny-imagenet") == "tiny-imagenet":
        lines = [f"| {measure} | ours | the paper's |", "|---|---|---|"]
        lines += [f"| {name} | {fmt(ours)} | {fmt(paper)} |" for name, ours, paper in rows]
    else:
        lines = [f"| {measure} | on {summary['data']} |", "|---|---|"]
        lines += [f"| {name} | {fmt(ours)} |" for name, ours, _ in rows]
    if "host" in summary:
        processes = summary["host"].get("processes", 1)
        lines.append(f"\nHost: {host_line(summary['host'])}" + (f", {processes} processes" if processes > 1 else "") + ".")
    return "\n".join(lines) + "\n"
