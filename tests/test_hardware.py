"""Chosen by capability: bf16 only where native, the device setting, ranking's path, the budget."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import devise
import devise.training.loop as training
from devise import hardware
from devise.config import TrainConfig
from devise.errors import DeviseError
from devise.experiment import budget
from devise.model import checkpoint
from devise.model import topk as rank


@pytest.fixture
def no_native_bf16(monkeypatch):
    """This CPU as an AVX2-only one: oneDNN would emulate bf16."""
    monkeypatch.setattr(hardware, "cpu_bf16_native", lambda: False)


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_bf16_native", lambda: True)


def toy_config(tmp_path, **changes) -> TrainConfig:
    settings = dict(data="toy", body="cnn", image_size=32, width=8, hidden=32, dropout=0.1, batch_size=128, epochs=1,
                    optimizer="adam", lr=3e-3, out=str(tmp_path / "run"))
    return TrainConfig(**{**settings, **changes})


def saved_bf16(run) -> bool:
    return tomllib.loads((run.folder / "config.toml").read_text())["bf16"]


def test_bf16_is_used_where_native_and_float32_elsewhere_unless_asked(tmp_path, no_native_bf16):
    cpu = torch.device("cpu")
    assert hardware.use_bf16(cpu) is False and hardware.use_bf16(cpu, True) is True
    assert saved_bf16(training.train(toy_config(tmp_path / "auto"), progress=False)) is False
    assert saved_bf16(training.train(toy_config(tmp_path / "asked", bf16=True), progress=False)) is True


def test_bf16_by_default_where_the_cpu_has_it(tmp_path, native_bf16):
    assert hardware.use_bf16(torch.device("cpu")) is True
    assert saved_bf16(training.train(toy_config(tmp_path / "auto"), progress=False)) is True
    assert saved_bf16(training.train(toy_config(tmp_path / "off", bf16=False), progress=False)) is False


def test_limiting_onednn_to_avx2_turns_native_bf16_off_in_a_new_process():
    code = "from devise.hardware import cpu_bf16_native; print(cpu_bf16_native())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**__import__("os").environ, "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert result.stdout.strip() == "False", result.stderr


def test_a_checkpoint_trained_with_bf16_predicts_in_float32_where_bf16_is_not_native(tmp_path, monkeypatch):
    run = training.train(toy_config(tmp_path, bf16=True), progress=False)
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


def test_every_tensor_of_a_checkpoint_is_on_the_cpu(tmp_path):
    run = training.train(toy_config(tmp_path), progress=False)
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


# ---------------------------------------------------------------------------------------------
# Ranking: the screen's precision follows the hardware; both give the exact top k


def screens_used(monkeypatch) -> list[torch.dtype]:
    used = []
    original = rank.group_maxima
    monkeypatch.setattr(rank, "group_maxima", lambda q, screen, *args: used.append(screen.dtype) or original(q, screen, *args))
    return used


@pytest.mark.parametrize("native, screen", [(False, torch.float32), (True, torch.bfloat16)])
def test_ranking_screens_in_bf16_only_where_native_and_is_exact_either_way(monkeypatch, native, screen):
    monkeypatch.setattr(hardware, "cpu_bf16_native", lambda: native)
    used = screens_used(monkeypatch)
    generator = torch.Generator().manual_seed(7)
    vocabulary = F.normalize(torch.randn(20000, 50, generator=generator), dim=1)
    queries = F.normalize(torch.randn(300, 50, generator=generator), dim=1)
    scores, index = rank.rank_topk(queries, vocabulary, k=10, normalized=True)
    assert used and set(used) == {screen}
    expected = (queries @ vocabulary.T).topk(10, dim=1)
    assert torch.allclose(scores, expected.values, atol=1e-6)
    assert torch.allclose((queries @ vocabulary.T).gather(1, index), expected.values, atol=1e-6)


def test_the_float32_screen_needs_only_the_summation_margin():
    assert rank.screening_error(50, torch.float32) < 1e-4 < rank.screening_error(50, torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# The budget's arithmetic


def test_budget_sizing_by_hand():
    stage = TrainConfig(epochs=2, batch_size=100)
    speeds = budget.Speeds(train=1000.0, train_small=None, frozen=1500.0, forward=2000.0, head=6000.0)
    work = budget.Workload(train_images=10_000, val_images=1_000, after_images=4_000)
    fixed = budget.FIXED_SECONDS + 4_000 / 2000 + 2 * budget.EPOCH_SECONDS
    # The whole preset: fixed + 2 epochs x (10,000 / 1,000 + 1,000 / 2,000) seconds.
    assert budget.estimate_seconds([stage], speeds, work, 1.0) == pytest.approx(fixed + 21)
    roomy = budget.plan_budget((fixed + 21) / budget.SAFETY + 1, [stage], speeds, work, batch_size=100)
    assert (roomy.fraction, roomy.epoch_images, roomy.val_images) == (1.0, 0, 0)
    # Two seconds to spare after the fixed costs: 2 / 21 of each epoch, rounded down to whole batches.
    tight = budget.plan_budget((fixed + 2) / budget.SAFETY, [stage], speeds, work, batch_size=100)
    assert tight.epoch_images == 900 and tight.val_images == 90
    assert tight.planned_seconds == pytest.approx(fixed + 2 * (0.9 + 0.045))
    assert tight.planned_seconds <= (fixed + 2) and budget.estimate_seconds(
        [stage], speeds, work, 1000 / 10_000) > fixed + 2, "one more batch an epoch would not fit"
    with pytest.raises(DeviseError, match="too short for this preset on this host"):
        budget.plan_budget(fixed / budget.SAFETY, [stage], speeds, work, batch_size=100)
    assert budget.plan_budget(fixed / budget.SAFETY, [stage], speeds, work, batch_size=100, at_least_one_batch=True).epoch_images == 100


def test_stages_with_held_out_classes_are_costed_with_their_class_splits():
    speeds = budget.Speeds(train=1000.0, train_small=None, frozen=1500.0, forward=2000.0, head=6000.0)
    work = budget.Workload(train_images=10_000, val_images=1_000, after_images=0, seen_classes=180)
    frozen = TrainConfig(head="embedding", epochs=2, freeze_epochs=2, init="x", unseen=20)
    # Features of half the epoch's images and half the validation images at 2,000 images/s, then
    # 3 splits x 2 epochs x 5,000 images through a last layer alone at 6,000 images/s.
    assert budget.calibration_seconds(frozen, speeds, work, 0.5) == pytest.approx(5_500 / 2000 + 6 * 5_000 / 6000)
    assert budget.calibration_seconds(replace(frozen, freeze_epochs=1), speeds, work, 0.5) == 0.0  # its body trained
    assert budget.calibration_seconds(replace(frozen, unseen=0), speeds, work, 0.5) == 0.0
    # The softmax stage's splits (ConSE's constant, chosen in zero-shot) redo its last layer for its epochs.
    softmax = TrainConfig(head="softmax", epochs=4, unseen=20)
    assert budget.calibration_seconds(softmax, speeds, work, 0.5) == pytest.approx(5_500 / 2000 + 12 * 5_000 / 6000)


def test_the_second_stage_is_sized_at_the_speed_the_first_really_ran():
    speeds = budget.Speeds(train=1000.0, train_small=500.0, frozen=1500.0, forward=2000.0, head=6000.0)
    slower = budget.rescale(speeds, observed_train=800.0)
    assert (slower.train, slower.train_small, slower.frozen, slower.forward, slower.head) == (800, 400, 1200, 1600, 4800)


def test_frozen_and_small_epochs_are_costed_at_their_own_speeds():
    speeds = budget.Speeds(train=100.0, train_small=400.0, frozen=500.0, forward=1000.0, head=4000.0)
    stage = TrainConfig(epochs=3, small_epochs=1, small_size=16, freeze_epochs=0)
    assert [budget.epoch_seconds(stage, e, speeds, 1000) for e in range(3)] == [2.5, 10, 10]
    frozen = TrainConfig(epochs=2, freeze_epochs=1, init="x")
    assert [budget.epoch_seconds(frozen, e, speeds, 1000) for e in range(2)] == [2, 10]


def test_a_budget_too_short_for_the_host_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "devise", "reproduce", "--preset", "demo", "--budget", "0.1",
                             "--out", str(tmp_path / "r"), "--quiet"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "too short for this preset on this host" in result.stderr
