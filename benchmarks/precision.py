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
import statistics
import time

import torch

from devise.hardware import describe_host, host_line, use_bf16


def gflops(dtype: torch.dtype, size: int, repeats: int) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    fp32, bf16 = gflops(torch.float32, args.size, args.repeats), gflops(torch.bfloat16, args.size, args.repeats)
    print(json.dumps({"benchmark": "precision", "host": host_line(describe_host(cpu)), "size": args.size,
                      "fp32_gflops": round(fp32, 2), "bf16_gflops": round(bf16, 2), "bf16_over_fp32": round(bf16 / fp32, 3),
                      "devise_uses_bf16": use_bf16(cpu)}))


if __name__ == "__main__":
    main()
