"""Is bf16 native here? A 2048 x 2048 matrix multiply in float32 and in bfloat16, and what devise
chooses. Where bf16 is emulated it runs hundreds of times slower than float32, which is why
devise uses bf16 autocast only where `devise.hardware.bf16_native` says so.

Prints one JSON line. Run it as is, and with `ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`
to see an AVX-512 BF16 CPU behave as an AVX2-only one.
Usage: python benchmarks/precision.py [--size 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json

import torch
from train_throughput import matmul_flops  # benchmarks/ is on the path when this script runs

from devise.hardware import describe_host, host_line, use_bf16


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    fp32, bf16 = (matmul_flops(dtype, args.size, args.repeats) / 1e9 for dtype in (torch.float32, torch.bfloat16))
    print(json.dumps({"benchmark": "precision", "host": host_line(describe_host(cpu)), "size": args.size,
                      "fp32_gflops": round(fp32, 2), "bf16_gflops": round(bf16, 2), "bf16_over_fp32": round(bf16 / fp32, 3),
                      "devise_uses_bf16": use_bf16(cpu)}))


if __name__ == "__main__":
    main()
