"""Where devise computes: the device, bf16 exactly where native, the host, and the allocator switch."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
import torch

import devise
import devise.hardware as memory
import devise.training.loop as training
from devise import hardware
from devise.errors import DeviseError
from devise.hardware import freed_memory_kept
from devise.model import checkpoint


@pytest.fixture
def no_native_bf16(monkeypatch):
    """This CPU as an AVX2-only one: oneDNN would emulate bf16."""
    monkeypatch.setattr(hardware, "cpu_bf16_native", lambda: False)


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_bf16_native", lambda: True)


def saved_bf16(run) -> bool:
    return tomllib.loads((run.folder / "config.toml").read_text())["bf16"]


def test_bf16_is_used_where_native_and_float32_elsewhere_unless_asked(tmp_path, no_native_bf16, toy_config):
    cpu = torch.device("cpu")
    assert hardware.use_bf16(cpu) is False and hardware.use_bf16(cpu, True) is True
    assert saved_bf16(training.train(toy_config(out=str(tmp_path / "auto" / "run"), bf16=None), progress=False)) is False
    assert saved_bf16(training.train(toy_config(out=str(tmp_path / "asked" / "run"), bf16=True), progress=False)) is True


def test_bf16_by_default_where_the_cpu_has_it(tmp_path, native_bf16, toy_config):
    assert hardware.use_bf16(torch.device("cpu")) is True
    assert saved_bf16(training.train(toy_config(out=str(tmp_path / "auto" / "run"), bf16=None), progress=False)) is True
    assert saved_bf16(training.train(toy_config(out=str(tmp_path / "off" / "run"), bf16=False), progress=False)) is False


def test_limiting_onednn_to_avx2_turns_native_bf16_off_in_a_new_process():
    code = "from devise.hardware import cpu_bf16_native; print(cpu_bf16_native())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**__import__("os").environ, "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert result.stdout.strip() == "False", result.stderr


def test_a_checkpoint_trained_with_bf16_predicts_in_float32_where_bf16_is_not_native(tmp_path, monkeypatch, toy_config):
    run = training.train(toy_config(bf16=True), progress=False)
    monkeypatch.setattr(hardware, "cpu_bf16_native", lambda: False)
    model = devise.load(run.folder, device="cpu")
    images = [torch.randint(0, 256, (40, 40, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(i)).numpy()
              for i in range(3)]
    ranked = model.classify(images, top=3, method="softmax")
    batch = model.preprocess.prepare(next(model.image_batches(images)))
    with torch.no_grad():
        expected = model.network(batch).float().softmax(dim=1).topk(3, dim=1)  # plain float32, by hand
    assert [[name for name, _ in row] for row in ranked] == [[run.class_names[i] for i in row] for row in expected.indices.tolist()]
    scores = [score for row in ranked for _, score in row]
    assert scores == pytest.approx(expected.values.flatten().tolist(), abs=1e-6)  # bf16 differs by ~1e-5


def test_every_tensor_of_a_checkpoint_is_on_the_cpu(tmp_path, toy_config):
    run = training.train(toy_config(), progress=False)
    state = checkpoint.load_checkpoint(run.folder)
    tensors = [t for t in state["model"].values()]
    tensors += [t for s in state["optimizer"]["state"].values() for t in s.values() if isinstance(t, torch.Tensor)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)


def test_device_names():
    assert hardware.resolve_device("cpu") == torch.device("cpu")
    assert hardware.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for wrong in ("tpu", "gpu0", "cuda:x"):
        with pytest.raises(DeviseError, match="--device must be"):
            hardware.resolve_device(wrong)
    if not torch.cuda.is_available():
        with pytest.raises(DeviseError, match="no CUDA GPU"):
            hardware.resolve_device("cuda:0")


@pytest.mark.parametrize("command", ["train", "evaluate", "zeroshot", "predict", "reproduce", "demo"])
def test_every_command_that_runs_a_model_takes_a_device(command, tmp_path):
    result = subprocess.run([sys.executable, "-m", "devise", command, "--help"], capture_output=True, text=True)
    assert "--device DEVICE" in result.stdout
    args = {"train": ["--data", "toy", "--out", str(tmp_path / "r")], "evaluate": [str(tmp_path)],
            "zeroshot": [str(tmp_path), "--target", "toy"], "predict": [str(tmp_path), "x.png"],
            "reproduce": ["--preset", "demo"], "demo": []}[command]
    result = subprocess.run([sys.executable, "-m", "devise", command, *args, "--device", "tpu"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("devise: error:")


def test_the_host_is_named_with_its_cpu_flags_and_bf16():
    host = hardware.describe_host()
    assert host["cores"] >= 1 and host["cpu"] and isinstance(host["bf16_native"], bool)
    line = hardware.host_line(host)
    assert host["cpu"] in line and "bf16" in line and f"{host['cores']} cores" in line


MEASURE = """
import resource, torch
from devise.hardware import freed_memory_kept

def page_faults_of_big_tensors(count=8, megabytes=64):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(count):
        torch.empty(megabytes * 2**20, dtype=torch.uint8).fill_(1)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

outside = page_faults_of_big_tensors()
with freed_memory_kept():
    page_faults_of_big_tensors()  # the first step grows the heap
    inside = page_faults_of_big_tensors()  # later steps reuse it
print(outside, inside)
"""


@pytest.mark.skipif(memory.glibc() is None, reason="the switches exist only in glibc")
def test_inside_the_block_big_tensors_reuse_memory_instead_of_faulting_in_new_pages():
    # A fresh process: glibc's allocator cannot be put back as it was once a block has run here.
    result = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, check=True)
    outside, inside = map(int, result.stdout.split())
    # outside, every 64 MB tensor is a fresh mmap of 16,384 pages, at every step
    assert outside > 8 * 16_000
    assert inside < outside / 3


def test_only_the_outermost_block_switches_and_it_restores_the_defaults(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "set_malloc", calls.append)
    with freed_memory_kept():
        with freed_memory_kept():
            pass
        assert calls == [memory.KEEP]
    assert calls == [memory.KEEP, memory.GLIBC_DEFAULTS]


def test_the_defaults_come_back_after_an_error(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "set_malloc", calls.append)
    with pytest.raises(ValueError), freed_memory_kept():
        raise ValueError("a failing epoch")
    assert calls == [memory.KEEP, memory.GLIBC_DEFAULTS]


def test_float32_inference_on_cuda_runs_without_tf32_and_puts_the_settings_back_after():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True  # as on a GPU host: TF32 allowed
    try:
        with hardware.inference_autocast(torch.device("cuda"), bf16=False):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with hardware.inference_autocast(torch.device("cpu"), bf16=False):  # a CPU has no TF32: nothing changes
            assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
