"""Where a training step's time goes, and which settings make it faster: measured, not guessed.

(1) torch.profiler over a few real training steps of a preset's softmax model: the operators
    with the most self CPU time, and the share of the step spent making the batch;
(2) the same step under each setting, A/B in rounds, median images/s: bf16 autocast on/off,
    channels_last on/off, 1 or 2 threads, torch.compile, and the smaller images that progressive
    resizing trains on first (the preset's --small-size, else half the size).
All of it with freed memory kept for the next step, as `devise train` runs; what that is worth
is measured by benchmarks/train_throughput.py, in fresh processes.
Prints one JSON line per result.
Usage: python benchmarks/profile_training.py --data-root ../shared/data [--preset cpu] [--body resnet9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from devise.config import TrainConfig, preset_settings
from devise.data import BatchLoader, Preprocess
from devise.data.pipeline import Augment
from devise.hardware import freed_memory_kept, use_bf16
from devise.model.network import build_network
from devise.training.loop import make_optimizer, training_step
from devise.training.objectives import objective_for
from devise.training.runs import seen_split


def step_function(config: TrainConfig, num_classes: int, compiled: bool = False):
    """A fresh model's step function, as train_one_epoch runs it."""
    torch.manual_seed(0)
    model, objective = build_network(config, num_classes), objective_for(config, None)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = make_optimizer(config, model)
    forward = torch.compile(model) if compiled else model

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        training_step(forward, objective, optimizer, images, labels, bf16=config.bf16)

    return step


def batches(config: TrainConfig, data, preprocess: Preprocess):
    while True:
        yield from BatchLoader(data, config.batch_size, preprocess, shuffle=True, augment=Augment.of(config))


def images_per_second(step, source, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step(*next(source))
    started, images = time.perf_counter(), 0
    for _ in range(steps):
        batch = next(source)
        step(*batch)
        images += len(batch[1])
    return images / (time.perf_counter() - started)


def profile_steps(config: TrainConfig, data, preprocess: Preprocess, steps: int) -> None:
    step = step_function(config, data.num_classes)
    source = batches(config, data, preprocess)
    step(*next(source))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with record_function("make batch"):
                images, labels = next(source)
            with record_function("train step"):
                step(images, labels)
    events = {e.key: e for e in prof.key_averages()}
    batch_ms, step_ms = (events[name].cpu_time_total / 1e3 / steps for name in ("make batch", "train step"))
    print(json.dumps({"benchmark": "profile", "body": config.body, "image_size": config.image_size,
                      "ms_per_step_making_batch": round(batch_ms, 1), "ms_per_step_training": round(step_ms, 1),
                      "batch_share": round(batch_ms / (batch_ms + step_ms), 3)}))
    ops = sorted((e for e in prof.key_averages() if not e.key.startswith(("make batch", "train step", "ProfilerStep"))),
                 key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    for e in ops[:12]:
        print(json.dumps({"benchmark": "profile_op", "op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 2),
                          "share": round(e.self_cpu_time_total / total, 3)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--body", help="override the preset's body (cnn or resnet9)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (its first call compiles for minutes)")
    args = parser.parse_args()
    config = TrainConfig(**preset_settings(args.preset, "softmax"), data_root=args.data_root)
    config = replace(config, bf16=use_bf16(torch.device("cpu"), config.bf16))  # as `devise train` decides
    if args.body:
        config = replace(config, body=args.body)
    data = seen_split(config, "train", [], progress=False)
    preprocess = Preprocess.fit(data.images)
    with freed_memory_kept():  # as `devise train` runs its steps
        profile_steps(config, data, preprocess, args.steps)

    threads = torch.get_num_threads()
    variants = {
        "as configured": (config, threads, False),
        "bf16 switched": (replace(config, bf16=not config.bf16), threads, False),
        "no channels_last": (replace(config, channels_last=False), threads, False),
        "1 thread": (config, 1, False),
    }
    if not args.no_compile:
        variants["torch.compile"] = (config, threads, True)
    smaller = config.small_size or config.image_size // 2  # what progressive resizing trains on first
    variants[f"{smaller} px images"] = (replace(config, image_size=smaller), threads, False)
    data_at = {config.image_size: data}
    results = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (variant, n_threads, compiled) in variants.items():
            if variant.image_size not in data_at:
                data_at[variant.image_size] = seen_split(variant, "train", [], progress=False)
            torch.set_num_threads(n_threads)
            step = step_function(variant, data.num_classes, compiled)
            with freed_memory_kept():
                results[name].append(images_per_second(step, batches(variant, data_at[variant.image_size], preprocess),
                                                       args.steps))
    torch.set_num_threads(threads)
    baseline = statistics.median(results["as configured"])
    for name, rates in results.items():
        print(json.dumps({"benchmark": "setting", "body": config.body, "setting": name,
                          "images_per_s": [round(r, 1) for r in rates],
                          "ratio_to_configured": round(statistics.median(rates) / baseline, 2)}))


if __name__ == "__main__":
    main()
