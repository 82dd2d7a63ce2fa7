"""Where devise computes and in what precision, decided once from what the machine can do.

bfloat16 autocast pays only where the hardware computes bf16 natively (CUDA GPUs that support it,
CPUs with AVX-512 BF16 or AMX); elsewhere oneDNN emulates it, many times slower than float32
(docs/performance.md). Also the host named beside every speed figure, torchrun's processes
(`Distributed`), and the allocator switch that keeps a step's freed memory for the next.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from devise.errors import DeviseError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """"auto" (a CUDA GPU when there is one, else the CPU), "cpu", "cuda" or "cuda:N"."""
    name = str(name or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviseError(f"--device must be {DEVICE_CHOICES}, not {name!r}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise DeviseError(f"--device must be {DEVICE_CHOICES}, not {name!r}")
    if not torch.cuda.is_available():
        raise DeviseError(f"--device {name}: no CUDA GPU is available here (use --device cpu or auto)")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviseError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


@functools.cache
def cpu_bf16_native() -> bool:
    """Whether oneDNN runs bf16 on this CPU's own instructions (AVX-512 BF16 or AMX). It honours
    `ONEDNN_MAX_CPU_ISA`, so `ONEDNN_MAX_CPU_ISA=AVX2` makes a bf16 CPU answer as an AVX2 one."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: the flags are all we have
        return {"avx512_bf16", "amx_bf16"} & set(cpu_info()["flags"]) != set()


def bf16_native(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_bf16_native()


def use_bf16(device: torch.device, requested: bool | None = None) -> bool:
    """bf16 autocast if asked for (True / False), else exactly where it is native."""
    return bf16_native(device) if requested is None else bool(requested)


PRECISIONS = ("float32", "bf16", "auto")  # a trained model's precision; float32 by default


def check_precision(precision: str) -> str:
    """One of `PRECISIONS`, or one clear line."""
    if precision not in PRECISIONS:
        raise DeviseError(f"precision must be {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


def inference_bf16(precision: str, device: torch.device) -> bool:
    """Whether a trained model computes in bf16: "float32" (the default, so that its vectors match
    its ONNX export and every other host's to float rounding), "bf16", or "auto" (bf16 where the
    device computes it natively: faster, its vectors off by bf16's rounding). Training keeps its
    own capability-aware default (`use_bf16`)."""
    if check_precision(precision) == "auto":
        return bf16_native(device)
    return precision == "bf16"


def autocast(device: torch.device, bf16: bool):
    """The mixed-precision context for a forward pass: bf16 autocast, or nothing."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def inference_autocast(device: torch.device, bf16: bool):
    """A trained model's forward pass: bf16 autocast, or float32 as written. On CUDA, float32
    convolutions would otherwise run in TF32 (cuDNN's default), whose 10-bit mantissas put a
    model's vectors off its ONNX export's and the CPU's by far more than float rounding."""
    return autocast(device, True) if bf16 else exact_float32(device)


@contextlib.contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """Inside, on CUDA: no TF32 in convolutions or matrix products; the settings as they were after."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# ---------------------------------------------------------------------------------------------
# The host, named beside every speed figure

INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@functools.cache
def cpu_info() -> dict:
    """The CPU's model name and its flags, from /proc/cpuinfo (Linux) or `platform` elsewhere."""
    model, flags = "", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value.split()
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return {"model": model, "flags": flags}


def describe_host(device: torch.device | None = None) -> dict:
    """What a speed figure depends on: CPU model, its vector flags, cores, GPU, bf16 native."""
    device = device or torch.device("cpu")
    info = cpu_info()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    host = {"cpu": info["model"], "cpu_flags": [f for f in INTERESTING_FLAGS if f in info["flags"]],
            "cores": cores, "torch_threads": torch.get_num_threads(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "bf16_native": bf16_native(device)}
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if isa:
        host["onednn_max_cpu_isa"] = isa
    return host


def host_line(host: dict) -> str:
    """One line naming a host, e.g. "AMD EPYC (avx2, avx512f, avx512_bf16), 2 cores, bf16 native"."""
    where = host["gpu"] or f"{host['cpu']} ({', '.join(host['cpu_flags']) or 'no AVX2'}), {host['cores']} cores"
    if host.get("onednn_max_cpu_isa"):
        where += f", oneDNN limited to {host['onednn_max_cpu_isa']}"
    return f"{where}, bf16 {'native' if host['bf16_native'] else 'not native'}"


# ---------------------------------------------------------------------------------------------
# Several processes (torchrun)


@dataclass(frozen=True)
class Distributed:
    """This process's place among the processes training one run (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where collectives run: the GPU for nccl, the CPU for gloo

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run folder and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over all processes (float64, so counts stay exact)."""
        if not self.active:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def broadcast(self, value: float) -> float:
        """Rank 0's value, on every process."""
        if not self.active:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.broadcast(tensor, 0)
        return float(tensor[0])

    def share_buffers(self, module: torch.nn.Module) -> None:
        """Give every process rank 0's buffers (batch-norm statistics): each process's last step
        updated its own from its share of the batch, and validation should see one model."""
        if self.active:
            for buffer in module.buffers():
                torch.distributed.broadcast(buffer, 0)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """The module as DistributedDataParallel (gradients averaged over processes), or as is."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device = next(module.parameters()).device
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def distributed(device_name: str | None = "auto") -> tuple[Distributed, torch.device]:
    """Join the process group torchrun started (once per process), and pick this process's device:
    with several processes on CUDA, the GPU of its local rank."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world_size == 1:
        return Distributed(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank, device), device


# ---------------------------------------------------------------------------------------------
# Memory: keep what a step frees for the next step
#
# Keep the memory a training step frees for the next step, instead of handing it back to the OS.
#
# glibc serves every allocation over 32 MB (most activations of a batch of 256 images) with a
# fresh `mmap` and unmaps it on `free`, so each step faults in, and the kernel zeroes, gigabytes
# of new pages: about 500,000 page faults per step of the default CNN at 64 px. With `mmap`
# and trimming switched off, freed blocks stay in the heap and the next step reuses them, which
# `benchmarks/train_throughput.py` measures (docs/performance.md). Only glibc has these
# switches (`mallopt`); on other systems the context manager changes nothing.

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters, from glibc's malloc.h
GLIBC_DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_MAX: 65536}
KEEP = {M_TRIM_THRESHOLD: 2**31 - 1, M_MMAP_MAX: 0}  # never trim (up to 2 GiB), never mmap

_depth = 0  # nested `freed_memory_kept` blocks: only the outermost one switches


@functools.cache  # looked up once, not at every block
def glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (it has `gnu_get_libc_version` and `mallopt`), else None."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def set_malloc(settings: dict[int, int]) -> None:
    libc = glibc()
    if libc is not None:
        for parameter, value in settings.items():
            libc.mallopt(parameter, value)


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[None]:
    """Inside: freed memory stays in the process. After the outermost block: glibc's default
    values again (though glibc no longer adapts its mmap threshold once a program has set it), and
    what the heap holds unused goes back to the OS (`malloc_trim`)."""
    global _depth
    if _depth == 0:
        set_malloc(KEEP)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            set_malloc(GLIBC_DEFAULTS)
            libc = glibc()
            if libc is not None:
                libc.malloc_trim(0)
