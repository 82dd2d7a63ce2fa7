"""End to end: `devise demo` trains, evaluates and reports; the report opens in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import devise

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Injected into a copy of the report: counts loaded images and any script error or console.error.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e)));
const realError = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); realError(...a); };
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const loaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-probe', loaded + '/' + images.length + '/' + window.__errors.length);
});
</script>"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    result = subprocess.run([sys.executable, "-m", "devise", "demo", "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "| softmax top-1 (val, trained classes) |" in result.stdout
    (out / "stdout.log").write_text(result.stdout)
    (out / "stderr.log").write_text(result.stderr)
    return out


def test_output_to_a_log_is_one_line_per_stage_and_per_epoch_without_progress_bars(demo):
    log = (demo / "stdout.log").read_text()
    stages = [line for line in log.splitlines() if line.startswith("devise: ") and not line.startswith("devise: epoch")]
    assert [line.split()[1] for line in stages] == ["training", "training", "evaluating", "zero-shot", "choosing",
                                                    "class", "class", "class", "writing"]  # ConSE's class splits
    assert "epoch 1/5:" in log and "epoch 5/5:" in log and "epoch 4/4:" in log
    assert "\r" not in log + (demo / "stderr.log").read_text(), "no progress bar redraws in a log"


def test_demo_runs_the_whole_pipeline(demo):
    for name in ("softmax/metrics.csv", "devise/metrics.json", "zeroshot-unseen/zeroshot.json",
                 "zeroshot-unseen/similarity.png", "zeroshot-unseen/examples.png", "report.html", "summary.md"):
        assert (demo / name).is_file(), name
    summary = json.loads((demo / "summary.json").read_text())
    assert summary["softmax top-1"] > 0.5  # 32 toy classes: chance is 0.03
    assert summary["zero-shot"]["softmax"]["hit@20"] == 0.0
    assert summary["zero-shot"]["DeViSE"]["hit@1"] > 1 / 8  # above chance over the 8 unseen classes
    # The demo's DeViSE body trains after its first epoch, so only ConSE's constant comes from class splits.
    assert summary["zero-shot"]["ConSE"]["calibration"] == "class split"
    assert summary["zero-shot"]["DeViSE"]["calibration"] == "seen share"
    page = (demo / "report.html").read_text()
    assert "<th>constant chosen by</th>" in page and "<td>class split</td>" in page and "<td>seen share</td>" in page


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_report_opens_in_a_headless_browser_with_every_image_and_no_error(demo, tmp_path):
    page = (demo / "report.html").read_text()
    assert "http://" not in page and "https://" not in page, "the report must not load anything from the web"
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    result = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
                             probed.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r'data-probe="(\d+)/(\d+)/(\d+)"', result.stdout)
    assert match, result.stderr[-2000:]
    loaded, total, errors = map(int, match.groups())
    assert total >= 4 and loaded == total, f"{loaded} of {total} images loaded"
    assert errors == 0
    assert not re.search(r"CONSOLE.*(Uncaught|Error)", result.stderr)


def odd_images(folder: Path) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = {"grey.png": Image.fromarray(rng.integers(0, 256, (50, 120), dtype=np.uint8), "L"),
              "rgba.png": Image.fromarray(rng.integers(0, 256, (300, 200, 4), dtype=np.uint8), "RGBA"),
              "tiny.jpg": Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)),
              "palette.gif": Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).convert("P")}
    for name, image in images.items():
        image.save(folder / name)
    return [folder / name for name in images]


def test_predict_names_odd_images_from_the_command_line_and_from_python(demo, tmp_path):
    paths = odd_images(tmp_path)
    result = subprocess.run([sys.executable, "-m", "devise", "predict", str(demo / "devise"), *map(str, paths),
                             "--vocabulary", "train,words:1000", "--top", "3", "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(line["image"]).name for line in lines] == [p.name for p in paths]
    assert all(len(line["labels"]) == 3 for line in lines)
    scores = [label["score"] for label in lines[0]["labels"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)

    model = devise.load(demo / "softmax")
    ranked = model.classify(paths, top=2, method="softmax")
    assert len(ranked) == 4 and all(len(r) == 2 and 0 <= r[0][1] <= 1 for r in ranked)
    assert all(label in model.labels for r in ranked for label, _ in r)


def test_predict_on_a_file_that_is_not_an_image_is_one_clear_error(demo, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello")
    result = subprocess.run([sys.executable, "-m", "devise", "predict", str(demo / "devise"), str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"devise: error: {bad} is not a readable image (UnidentifiedImageError)"


@pytest.mark.parametrize("preset", ["cpu", "cpu-long", "gpu", "paper", "demo"])
def test_every_preset_gives_valid_settings_and_warm_starts_devise_from_its_softmax(tmp_path, preset):
    from devise.config import problems
    from devise.experiment.reproduce import preset_configs

    softmax, devise = preset_configs(preset, tmp_path, None, "unseen", False)
    for config in (softmax, devise):
        assert problems(config) == []
    assert (softmax.head, devise.head) == ("softmax", "embedding")
    assert devise.init == softmax.out and softmax.unseen == devise.unseen > 0


def test_the_report_escapes_everything_it_reads_from_files(demo, tmp_path):
    import shutil

    from devise.experiment.report import write_report

    evil = "<script>alert(1)</script>"
    run = tmp_path / "run"
    shutil.copytree(demo / "devise", run, ignore=shutil.ignore_patterns("zeroshot-*"))
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**{key: evil for key in metrics}, "hit@1": evil, "chance": {"hit@1": evil},
                                                  evil: evil}))
    zero_shot = run / "zeroshot-x"
    zero_shot.mkdir()
    entry = {"kind": evil, "hit@1": evil, "hit@5": 0.5, "per_class_top1": evil, "similarity": evil, "lift": evil,
             "gzsl_harmonic": evil, evil: evil}
    (zero_shot / "zeroshot.json").write_text(json.dumps({
        "target": evil, "images": evil, "target_classes": evil, "label_space": evil, "vocabulary": evil,
        "models": {evil: entry}, "control_similarity": evil, "examples": evil}))
    page = write_report([run], tmp_path / "report.html", title=evil).read_text()
    assert "<script" not in page.lower()
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 10
    assert "0.5000" in page, "numbers are still written as numbers"
