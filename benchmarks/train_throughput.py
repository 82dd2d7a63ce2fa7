"""Training images per second: devise's pipeline against the plain way, and the fraction of peak.

(a) devise: uint8 images in memory, whole-batch augmentation, bf16 autocast where the CPU computes
    bf16 natively (float32 elsewhere), channels_last, freed memory kept for the next step
    (`devise.hardware`, as `devise train` does);
(b) plain: a torch Dataset that decodes each JPEG from the zip with PIL and applies torchvision
    transforms per image, through a DataLoader with 2 workers, fp32.
(c) devise as (a) but with glibc's default allocator, which returns freed memory to the OS.
Same model (the default CNN), same batch size, at 32 and 64 px, measured A/B/C/A/B/C in one run,
each measurement in a fresh process (malloc settings cannot be undone within one).
The training step's FLOPs (torch's FlopCounterMode) divided by its time, against a large matrix
multiply in our precision measured in the same run, gives the fraction of the machine's peak (the
bf16 multiply is left out where bf16 is emulated: it would take minutes).
Usage: python benchmarks/train_throughput.py --data-root ../shared/data [--steps 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import json
import multiprocessing
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from devise.config import TrainConfig
from devise.data import BatchLoader, Preprocess, load_dataset
from devise.data.pipeline import Augment
from devise.data.sources import FileSource
from devise.data.tiny_imagenet import list_split, locate, open_source, read_class_names
from devise.hardware import describe_host, freed_memory_kept, host_line, use_bf16
from devise.model.network import ModelSpec, create_model


class PlainTinyImageNet(torch.utils.data.Dataset):
    """The plain way: one JPEG decoded and transformed per item."""

    def __init__(self, root: str, size: int):
        from torchvision import transforms

        source = open_source(locate(root, None, False))
        self.path, self.prefix = source.path, source.prefix
        wnids, _ = read_class_names(source)
        self.files, self.labels = list_split(source, wnids)["train"]
        steps = [transforms.Resize(size)] if size != 64 else []
        self.transform = transforms.Compose(steps + [
            transforms.RandomCrop(size, padding=4, padding_mode="reflect"), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize((0.48, 0.45, 0.40), (0.27, 0.26, 0.28))])
        self.source = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        if self.source is None:  # one zip handle per worker process
            self.source = FileSource(self.path, self.prefix)
        image = Image.open(io.BytesIO(self.source.read(self.files[i]))).convert("RGB")
        return self.transform(image), self.labels[i]


def step_fn(model, optimizer, fast: bool):
    def step(images, labels):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            loss = F.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def images_per_second(batches, step, steps: int) -> tuple[float, float]:
    """Training images per second over `steps` steps after a warm-up one, and the minor page
    faults of this process per step (fresh pages the kernel had to map and zero)."""
    iterator = iter(batches)
    step(*next(iterator))  # warm-up
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    count = 0
    for _ in range(steps):
        images, labels = next(iterator)
        step(images, labels)
        count += len(labels)
    seconds = time.perf_counter() - started
    return count / seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps


def matmul_flops(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * n**3 / statistics.median(times)


CONTENDERS = ("devise", "devise, freed memory returned (glibc's default)", "plain")


def devise_model_and_batches(size: int, data_root: str, batch_size: int):
    """Our way: the default CNN in channels_last, shuffled and augmented uint8 batches from memory."""
    config = TrainConfig()
    data = load_dataset("tiny-imagenet", data_root, "train", image_size=size, progress=False)
    model = create_model(ModelSpec.of(config), 200).to(memory_format=torch.channels_last)
    return model, BatchLoader(data, batch_size, Preprocess.fit(data.images), shuffle=True, augment=Augment.of(config))


def measure(method: str, size: int, data_root: str, batch_size: int, steps: int) -> tuple[float, float]:
    """(images per second, page faults per step) of one contender at one image size, in this process.
    Our way uses bf16 autocast where devise would (the CPU computes bf16 natively), the plain way float32."""
    torch.manual_seed(0)
    fast = method != "plain" and use_bf16(torch.device("cpu"))
    if method != "plain":
        model, batches = devise_model_and_batches(size, data_root, batch_size)
    else:
        model = create_model(ModelSpec.of(TrainConfig()), 200)
        batches = torch.utils.data.DataLoader(PlainTinyImageNet(data_root, size), batch_size, shuffle=True,
                                              num_workers=2, persistent_workers=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    with freed_memory_kept() if method == "devise" else contextlib.nullcontext():
        return images_per_second(batches, step_fn(model, optimizer, fast), steps)


def in_fresh_process(function, *args):
    """`function(*args)` in a new Python process: malloc's settings cannot be put back once
    changed (glibc then stops adapting its mmap threshold), so each contender starts clean."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def step_flops_per_image(size: int, data_root: str, batch_size: int) -> float:
    """FLOPs of one training step of the default CNN (torch's FlopCounterMode), per image."""
    model, batches = devise_model_and_batches(size, data_root, batch_size)
    images, labels = next(iter(batches))
    with FlopCounterMode(display=False) as counter:
        step_fn(model, torch.optim.SGD(model.parameters(), lr=0.01), use_bf16(torch.device("cpu")))(images, labels)
    return counter.get_total_flops() / batch_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    bf16 = use_bf16(torch.device("cpu"))
    peak = {"fp32": matmul_flops(torch.float32), **({"bf16": matmul_flops(torch.bfloat16)} if bf16 else {})}
    ours_peak = peak["bf16" if bf16 else "fp32"]
    print(json.dumps({"benchmark": "peak_matmul", **{f"{k}_gflops": round(v / 1e9, 1) for k, v in peak.items()},
                      "host": host_line(describe_host())}), flush=True)
    for size in (32, 64):
        results, faults = {method: [] for method in CONTENDERS}, {method: [] for method in CONTENDERS}
        for _ in range(args.rounds):  # A/B/C/A/B/C
            for method in CONTENDERS:
                rate, faults_per_step = in_fresh_process(measure, method, size, args.data_root, args.batch_size,
                                                         args.steps)
                results[method].append(rate)
                faults[method].append(faults_per_step)
        flops_per_image = step_flops_per_image(size, args.data_root, args.batch_size)
        ours, default_malloc, plain = (statistics.median(results[method]) for method in CONTENDERS)
        print(json.dumps({"benchmark": "train_throughput", "image_size": size, "batch_size": args.batch_size,
                          "devise_images_per_s": [round(x, 1) for x in results["devise"]],
                          "devise_default_malloc_images_per_s": [round(x, 1) for x in results[CONTENDERS[1]]],
                          "plain_images_per_s": [round(x, 1) for x in results["plain"]],
                          "page_faults_per_step_median": {method: round(statistics.median(faults[method]))
                                                          for method in CONTENDERS},
                          "speedup_median": round(ours / plain, 2),
                          "freed_memory_kept_speedup": round(ours / default_malloc, 2),
                          "gflops_per_image_train_step": round(flops_per_image / 1e9, 3),
                          "achieved_gflops": round(ours * flops_per_image / 1e9, 1),
                          "fraction_of_matmul_peak_in_our_precision": round(ours * flops_per_image / ours_peak, 3)}),
              flush=True)


if __name__ == "__main__":
    main()
