"""Training images per second: devise's pipeline against the plain way, and the fraction of peak.

(a) devise: uint8 images in memory, whole-batch augmentation, bf16 autocast, channels_last, freed
    memory kept for the next step (`devise.memory`, as `devise train` does);
(b) plain: a torch Dataset that decodes each JPEG from the zip with PIL and applies torchvision
    transforms per image, through a DataLoader with 2 workers, fp32.
Same model (the default CNN), same batch size, at 32 and 64 px, measured A/B/A/B in one run.
The training step's FLOPs (torch's FlopCounterMode) divided by its time, against a large bf16
and fp32 matrix multiply measured in the same run, gives the fraction of the machine's peak.
Usage: python benchmarks/train_throughput.py --data-root ../shared/data [--steps 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from devise.config import TrainConfig
from devise.data import BatchLoader, Normalizer, load_dataset
from devise.data.sources import FileSource
from devise.data.tiny_imagenet import list_split, locate, open_source, read_class_names
from devise.memory import freed_memory_kept
from devise.models import create_model


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


def images_per_second(batches, step, steps: int) -> float:
    iterator = iter(batches)
    step(*next(iterator))  # warm-up
    started = time.perf_counter()
    count = 0
    for _ in range(steps):
        images, labels = next(iterator)
        step(images, labels)
        count += len(labels)
    return count / (time.perf_counter() - started)


def matmul_flops(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * n**3 / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    config = TrainConfig()
    peak = {"bf16": matmul_flops(torch.bfloat16), "fp32": matmul_flops(torch.float32)}
    print(json.dumps({"benchmark": "peak_matmul", "bf16_gflops": round(peak["bf16"] / 1e9, 1),
                      "fp32_gflops": round(peak["fp32"] / 1e9, 1)}))
    for size in (32, 64):
        data = load_dataset("tiny-imagenet", args.data_root, "train", image_size=size, progress=False)
        normalizer = Normalizer.fit(data.images)
        results = {"devise": [], "plain": []}
        for _ in range(args.rounds):  # A/B/A/B
            for method in ("devise", "plain"):
                torch.manual_seed(0)
                model = create_model(config.model_spec, 200)
                fast = method == "devise"
                if fast:
                    model = model.to(memory_format=torch.channels_last)
                    batches = BatchLoader(data, args.batch_size, normalizer, shuffle=True, augment=config.augment)
                else:
                    batches = torch.utils.data.DataLoader(PlainTinyImageNet(args.data_root, size), args.batch_size,
                                                          shuffle=True, num_workers=2, persistent_workers=False)
                optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
                with freed_memory_kept() if fast else contextlib.nullcontext():
                    results[method].append(images_per_second(batches, step_fn(model, optimizer, fast), args.steps))
        model = create_model(config.model_spec, 200).to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        images, labels = next(iter(BatchLoader(data, args.batch_size, normalizer)))
        with FlopCounterMode(display=False) as counter:
            step_fn(model, optimizer, True)(images, labels)
        flops_per_image = counter.get_total_flops() / args.batch_size
        ours, plain = statistics.median(results["devise"]), statistics.median(results["plain"])
        print(json.dumps({"benchmark": "train_throughput", "image_size": size, "batch_size": args.batch_size,
                          "devise_images_per_s": [round(x, 1) for x in results["devise"]],
                          "plain_images_per_s": [round(x, 1) for x in results["plain"]],
                          "speedup_median": round(ours / plain, 2),
                          "gflops_per_image_train_step": round(flops_per_image / 1e9, 3),
                          "achieved_gflops": round(ours * flops_per_image / 1e9, 1),
                          "fraction_of_bf16_matmul_peak": round(ours * flops_per_image / peak["bf16"], 3)}))


if __name__ == "__main__":
    main()
