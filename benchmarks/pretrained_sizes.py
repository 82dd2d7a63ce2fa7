"""Which input size for the pretrained preset: hit@k and time of its heads at a few sizes.

A 64 px Tiny ImageNet image upscaled to 224 px costs EfficientNet-Lite0 about twelve times the
compute of 64 px, so the `pretrained` preset's size is chosen by measurement: for each size, the
whole preset (`devise reproduce --preset pretrained`: features, both heads, zero-shot, report) on
an evenly spaced share of the training images, and one JSON line with the seen-class hit@k of both
heads, the held-out figures and the wall time.

Usage: python benchmarks/pretrained_sizes.py --data-root ../shared/data [--sizes 96,128,160]
       [--images 18000] [--out runs/sizes]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from devise.experiment.reproduce import reproduce
from devise.hardware import describe_host, host_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--sizes", default="96,128,160", help="input sizes in pixels, comma-separated")
    parser.add_argument("--images", type=int, default=18000, help="training images (evenly spaced; 0: all 90,000)")
    parser.add_argument("--out", default="runs/sizes")
    args = parser.parse_args()
    for size in [int(s) for s in args.sizes.split(",")]:
        out = Path(args.out) / f"{size}px"
        started = time.perf_counter()
        summary = reproduce("pretrained", data_root=args.data_root, out=out, progress=False,
                            overrides={"image_size": size, "epoch_images": args.images})
        zero_shot = summary["zero-shot"]
        print(json.dumps({
            "benchmark": "pretrained_sizes", "image_size": size, "train_images": args.images or 90000,
            "softmax_top1": summary["softmax top-1"], "softmax_top5": summary["softmax top-5"],
            "devise_hit1": summary["DeViSE hit@1"], "devise_hit5": summary["DeViSE hit@5"],
            "held_out_devise_hit1": zero_shot["DeViSE"]["hit@1"], "held_out_devise_hit5": zero_shot["DeViSE"]["hit@5"],
            "held_out_conse_hit5": zero_shot["ConSE"]["hit@5"],
            "wall_minutes": round((time.perf_counter() - started) / 60, 2),
            "host": host_line(describe_host())}), flush=True)


if __name__ == "__main__":
    main()
