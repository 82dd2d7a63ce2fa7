"""Two processes under torchrun (gloo, on the CPU) train one run as one process would."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import toy_flags

from devise.model import checkpoint

# The toy set, a small plain CNN, no dropout: per-process batch-norm statistics (32 images a
# process against 64) are then the only difference from one process, and it is small.
TOY = [*toy_flags(width=8, hidden=32, dropout=0, batch_size=128, schedule="cosine"), "--quiet"]
LOSS_TOLERANCE = 0.03  # relative, epoch by epoch; measured: at most 0.8% on this set


def torchrun(*args: str, **options) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "devise", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **options)


def devise(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devise", *args], capture_output=True, text=True, timeout=300)


def metrics(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("ddp") / "run"
    result = torchrun("train", *TOY, "--epochs", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def test_two_processes_write_the_run_folder_once(two_process_run):
    out, result = two_process_run
    assert {p.name for p in out.iterdir()} == {".devise", "config.toml", "metrics.csv", "checkpoint.pt", "curves.png",
                                              "summary.json"}
    assert [row["epoch"] for row in metrics(out)] == ["1", "2", "3"]
    printed = [line for line in result.stdout.splitlines() if line.startswith("trained 3 epochs in ")]
    assert len(printed) == 1, "only rank 0 prints the summary"
    assert printed[0].startswith("trained 3 epochs in ") and " on cpu x 2 processes " in printed[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["host"]["processes"] == 2 and summary["epochs"] == 3


def test_two_processes_follow_the_loss_curve_of_one_with_the_same_global_batch(two_process_run, tmp_path):
    out, _ = two_process_run
    single = devise("train", *TOY, "--epochs", "3", "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    two, one = metrics(out), metrics(tmp_path / "one")
    for a, b in zip(two, one):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=LOSS_TOLERANCE), (a, b)
        assert a["lr"] == b["lr"], "the same number of steps: each process takes half of every batch"
    assert float(two[-1]["train_loss"]) < 0.8 * float(two[0]["train_loss"])


def test_a_killed_two_process_run_resumes_under_torchrun_to_the_same_weights(two_process_run, tmp_path):
    out, _ = two_process_run
    stopped = tmp_path / "stopped"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "devise",
               "train", *TOY, "--epochs", "3", "--out", str(stopped)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (stopped / "checkpoint.pt").is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers, mid-run
    process.wait()
    killed_at = checkpoint.load_checkpoint(stopped)["epoch"]
    assert killed_at < 3, "killed before the end"

    resumed = torchrun("train", "--resume", "--out", str(stopped), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    full, again = (checkpoint.load_checkpoint(folder) for folder in (out, stopped))
    assert again["epoch"] == 3
    for name, tensor in full["model"].items():
        assert torch.allclose(tensor.float(), again["model"][name].float(), atol=1e-6), name
    assert [row["epoch"] for row in metrics(stopped)] == ["1", "2", "3"]


def test_reproduce_runs_under_torchrun(tmp_path):
    result = torchrun("reproduce", "--preset", "demo", "--out", str(tmp_path / "demo"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("| softmax top-1 (val, trained classes) |") == 1, "rank 0 alone reports"
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["host"]["processes"] == 2 and summary["softmax top-1"] > 0.3
    assert "2 processes" in (tmp_path / "demo" / "summary.md").read_text()
