"""The GPU check: an epoch of Tiny ImageNet at 64 px on a GPU, then `devise reproduce --preset gpu`.

(1) The gpu preset's softmax model, trained as `devise train` trains it (uint8 training set in the
    device's memory, whole-batch augmentation there, bf16 autocast where native): images/s over
    one epoch, FLOPs per image (torch's FlopCounterMode), achieved TFLOP/s, and their share of the
    device's bf16 matrix-multiply peak, measured in the same run.
(2) `devise reproduce --preset gpu` end to end on the same device: wall time, softmax top-1, DeViSE
    and zero-shot figures (its summary.json).
(3) The run's checkpoint loaded on the CPU gives the same outputs as on the device it was
    trained on (a checkpoint does not depend on the device).
Prints one JSON line per result; the host is named in each.
Usage: python benchmarks/gpu.py --data-root ../shared/data [--device cuda] [--out runs/gpu]
       python benchmarks/gpu.py --data-root ../shared/data --device cpu --steps 5   (a smoke run:
       the epoch is 5 steps, and each stage of the end-to-end run one epoch of 5 steps)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from devise.config import TrainConfig, preset_settings
from devise.data import BatchLoader, Preprocess
from devise.data.pipeline import Augment
from devise.experiment.reproduce import reproduce
from devise.hardware import describe_host, freed_memory_kept, host_line, resolve_device, use_bf16
from devise.model.checkpoint import load_run
from devise.model.network import build_network
from devise.training.loop import make_optimizer, training_step
from devise.training.objectives import objective_for
from devise.training.runs import run_split, seen_split


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 8192, repeats: int = 10) -> float:
    """FLOP/s of a large square matrix multiply: the yardstick for the training step."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    synchronise(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronise(device)
    return 2 * n**3 * repeats / (time.perf_counter() - started)


def epoch_throughput(config: TrainConfig, device: torch.device, steps: int) -> dict:
    """One epoch (or `steps` steps) of the preset's softmax model, timed after 3 warm-up steps."""
    data = seen_split(config, "train", [], progress=False)
    preprocess = Preprocess.fit(data.images)
    data = data.to(device)
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    model, objective = build_network(config, data.num_classes).to(device), objective_for(config, None)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = make_optimizer(config, model)
    loader = BatchLoader(data, config.batch_size, preprocess, shuffle=True, augment=Augment.of(config),
                         seed=config.seed, drop_last=True)
    batches = iter(loader)
    for _ in range(3):
        training_step(model, objective, optimizer, *next(batches), config.bf16)
    images, labels = next(batches)
    with FlopCounterMode(display=False) as counter:
        training_step(model, objective, optimizer, images, labels, bf16=config.bf16)
    flops_per_image = counter.get_total_flops() / len(labels)
    timed = steps or len(loader)
    loader.set_epoch(1)
    with freed_memory_kept():
        synchronise(device)
        started = time.perf_counter()
        for step, (images, labels) in enumerate(loader):
            if step == timed:
                break
            training_step(model, objective, optimizer, images, labels, bf16=config.bf16)
        synchronise(device)
        seconds = time.perf_counter() - started
    return {"steps": timed, "images": timed * config.batch_size, "seconds": seconds,
            "images_per_second": timed * config.batch_size / seconds, "epoch_seconds": len(loader) * seconds / timed,
            "gflops_per_image": flops_per_image / 1e9}


def same_outputs_on_the_cpu(run_folder: Path, device: torch.device) -> float:
    """The largest difference between the run's outputs on `device` and on the CPU, in float32."""
    here, cpu = load_run(run_folder, device), load_run(run_folder, "cpu")
    data = run_split(cpu.config, cpu.folder, progress=False)
    images = cpu.preprocess.prepare(data.images[:64])
    with torch.no_grad():
        return float((here.model(images.to(device)).float().cpu() - cpu.model(images).float()).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=0, help="time this many steps instead of an epoch (smoke run)")
    parser.add_argument("--out", default="runs/gpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    host = host_line(describe_host(device))
    config = TrainConfig(**preset_settings("gpu", "softmax"), data_root=args.data_root)
    config = replace(config, bf16=use_bf16(device, config.bf16))

    peak = matmul_peak(device, torch.bfloat16 if config.bf16 else torch.float32)
    print(json.dumps({"benchmark": "gpu_matmul_peak", "host": host, "bf16": config.bf16,
                      "tflops": round(peak / 1e12, 1)}), flush=True)
    epoch = epoch_throughput(config, device, args.steps)
    achieved = epoch["images_per_second"] * epoch["gflops_per_image"] * 1e9
    print(json.dumps({"benchmark": "gpu_epoch", "host": host, "preset": "gpu", "image_size": config.image_size,
                      "batch_size": config.batch_size, **{k: round(v, 3) for k, v in epoch.items()},
                      "achieved_tflops": round(achieved / 1e12, 1), "share_of_matmul_peak": round(achieved / peak, 3)}),
          flush=True)

    smoke = {"epochs": 1, "epoch_images": args.steps * config.batch_size, "val_images": 2000} if args.steps else None
    started = time.perf_counter()
    summary = reproduce("gpu", data_root=args.data_root, out=args.out, progress=False, device=str(device), overrides=smoke)
    print(json.dumps({"benchmark": "gpu_reproduce", "host": host, "smoke_run": bool(args.steps),
                      "wall_minutes": round((time.perf_counter() - started) / 60, 2),
                      **{k: summary[k] for k in ("softmax top-1", "softmax top-5", "DeViSE hit@1", "DeViSE hit@5")},
                      "zero_shot": summary["zero-shot"]}), flush=True)
    print(json.dumps({"benchmark": "gpu_checkpoint_on_cpu", "host": host,
                      "max_output_difference": same_outputs_on_the_cpu(Path(args.out) / "softmax", device)}), flush=True)


if __name__ == "__main__":
    main()
