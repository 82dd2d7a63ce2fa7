"""End to end: `devise demo` trains, evaluates and reports; the report opens in a real browser."""

from __future__ import annotations

import base64
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
  // Click the per-class table's third header twice: its rows sorted rising, then falling.
  const table = document.querySelector('table.sortable');
  const column = () => Array.from(table.tBodies[0].rows).map(r => parseFloat(r.cells[2].textContent));
  const sorted = (values, sign) => values.every((v, i) => i === 0 || sign * (v - values[i - 1]) >= 0);
  table.tHead.rows[0].cells[2].click();
  const rising = sorted(column(), 1);
  table.tHead.rows[0].cells[2].click();
  const falling = sorted(column(), -1) && new Set(column()).size > 1;
  document.body.setAttribute('data-probe', loaded + '/' + images.length + '/' + window.__errors.length + '/'
                             + (rising && falling ? 'sorts' : 'unsorted'));
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


def test_output_to_a_log_is_one_timed_line_per_stage_and_per_epoch_without_progress_bars(demo):
    log = (demo / "stdout.log").read_text()
    lines = [line.split(maxsplit=3) for line in log.splitlines() if line.startswith("devise: ")]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", f"{day} {time}") for _, day, time, _ in lines)
    stages = [text.split()[0] + (" " + text.split()[1] if text.startswith("stage") else "")
              for *_, text in lines if not text.startswith("epoch")]
    assert stages == ["stage 1/5:", "training", "stage 2/5:", "training", "stage 3/5:", "stage 4/5:", "choosing",
                      "class", "class", "class", "stage 5/5:"]  # each run says what it trains; ConSE's class splits
    epochs = [text for *_, text in lines if text.startswith("epoch")]
    assert [text.split()[1] for text in epochs] == [f"{i}/5" for i in range(1, 6)] + [f"{i}/4" for i in range(1, 5)]
    assert all(" img/s " in text and " ETA " in text for text in epochs if text.split()[1] not in ("5/5", "4/4"))
    assert "\r" not in log + (demo / "stderr.log").read_text(), "no progress bar redraws in a log"
    assert "Loading weights" not in log + (demo / "stderr.log").read_text()


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
    assert "the paper's" not in (demo / "summary.md").read_text(), "toy figures do not sit beside the paper's"
    assert "| zero-shot DeViSE hit@1 / 2 / 5 / 10 / 20 |" in (demo / "summary.md").read_text(), "held out of the body too"
    assert "next: devise predict" in (demo / "stdout.log").read_text()
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
    match = re.search(r'data-probe="(\d+)/(\d+)/(\d+)/(\w+)"', result.stdout)
    assert match, result.stderr[-2000:]
    loaded, total, errors = map(int, match.groups()[:3])
    assert total >= 12 and loaded == total, f"{loaded} of {total} images loaded"  # figures and six examples
    assert errors == 0
    assert match[4] == "sorts", "a click on a header of the per-class table sorts its rows, a second reverses them"
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

    from devise.experiment.report import SORT_SCRIPT, write_report

    evil = "<script>alert(1)</script>"
    run = tmp_path / "run"
    shutil.copytree(demo / "devise", run, ignore=shutil.ignore_patterns("zeroshot-*"))
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**{key: evil for key in metrics}, "hit@1": evil, "chance": {"hit@1": evil},
                                                  evil: evil}))
    zero_shot = run / "zeroshot-x"
    zero_shot.mkdir()
    entry = {"kind": evil, "hit@1": evil, "hit@5": 0.5, "per_class_top1": evil, "similarity": evil, "lift": evil,
             "gzsl_harmonic": evil, evil: evil, "per_class": {"images": [evil], "hit@1": [0.5], "hit@5": [evil]},
             "confusion": [[1, 0]], "map": {"images": [[0.0, 1.0]], "image_class": [0], "labels": [[1.0, 0.0]]},
             "interval_95": {"hit@1": [evil, 1], "hit@5": [0.4, 0.6]}}
    examples = {"images": [base64.b64encode(b"not a png").decode()], "true": [evil],
                "predictions": {evil: [[[evil, 0.5], [f'" onerror="{evil}', 0.1]]]}, "scores": {evil: [[0.9, 0.1]]}}
    (zero_shot / "zeroshot.json").write_text(json.dumps({
        "target": evil, "images": evil, "target_classes": evil, "label_space": evil, "vocabulary": evil,
        "models": {evil: entry, r"$\unknown$": entry},  # a name matplotlib would read as mathematics
        "control_similarity": evil, "examples": examples, "class_names": [evil]}))
    summary = f"| {evil} | x |\n|---|---|\n| a | {evil} |"
    page = write_report([run], tmp_path / "report.html", title=evil, summary=summary).read_text()
    page = page.replace(SORT_SCRIPT, "")  # the page's own script, the only one
    assert "<script" not in page.lower() and '" onerror=' not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 15
    assert "0.5000" in page, "numbers are still written as numbers"


def test_the_demo_report_holds_what_a_paper_needs_and_no_paper_column(demo):
    page = (demo / "report.html").read_text()
    results = json.loads((demo / "zeroshot-unseen" / "zeroshot.json").read_text())
    for heading in ("Settings, seed and host", "Summary", "The seen-unseen curve", "Per class",
                    "Confusion over the target classes", "Image vectors and label vectors in two dimensions",
                    "Examples"):
        assert f">{heading}</h" in page, heading
    assert f"by devise {devise.__version__}" in page and "<td>0</td>" in page  # the version; the seed
    assert "Comparison with the paper" not in page and "paper&#x27;s</th>" not in page, "toy figures stand alone"
    # The per-class table, sortable: one row per held-out class, with every model's hit@1 and hit@5.
    per_class = page.split('<table class="sortable">')[1].split("</table>")[0]
    assert per_class.count("<tr>") == 1 + len(results["class_names"]) == 9
    assert "<th>DeViSE (devise) hit@1</th>" in per_class and "<th>softmax (softmax) hit@5</th>" in per_class
    # Bootstrap intervals: on the validation split and zero-shot, each around its figure.
    devise_row = re.search(r"<tr><td>DeViSE \(devise\)</td><td>320</td><td>([\d.]+)</td><td>([\d.]+) to ([\d.]+)</td>",
                           page)
    low, figure, high = float(devise_row[2]), float(devise_row[1]), float(devise_row[3])
    assert low <= figure <= high and high - low > 0.01
    assert page.count('<div class="example">') == 6 and page.count("true label: <b>") == 6
    assert "t-SNE (scikit-learn)" in page and "AUSUC" in page
    # zeroshot.json holds what the page draws: the examples' images as PNG, DeViSE's map and curve.
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in results["examples"]["images"])
    devise_figures = results["models"]["DeViSE (devise)"]
    assert len(devise_figures["map"]["images"]) == 300 and len(devise_figures["map"]["labels"]) == 8
    assert devise_figures["seen_unseen_curve"]["unseen"][0] == 0.0 and sum(map(sum, devise_figures["confusion"])) == 320


def test_the_report_sets_a_tiny_imagenet_experiment_beside_the_paper_and_a_toy_one_alone(demo, tmp_path):
    from devise.experiment.report import write_report
    from devise.experiment.reproduce import summary_table

    summary = json.loads((demo / "summary.json").read_text())
    runs = [demo / "softmax", demo / "devise"]
    tiny = write_report(runs, tmp_path / "tiny.html", summary=summary_table({**summary, "data": "tiny-imagenet"}))
    page = tiny.read_text()
    assert "<h2>Comparison with the paper</h2>" in page and "<th>the paper&#x27;s</th>" in page
    assert "<td>softmax top-1 (val, trained classes)</td><td>0.984</td><td>0.250</td>" in page
    toy = write_report(runs, tmp_path / "toy.html", summary=summary_table(summary)).read_text()
    assert "<h2>Summary</h2>" in toy and "paper&#x27;s</th>" not in toy



def test_a_report_killed_at_any_file_leaves_the_earlier_report_whole(toy_runs, tmp_path, monkeypatch):
    from conftest import Killed, kill_at

    from devise.experiment.report import write_report

    out = tmp_path / "report.html"
    earlier = write_report([toy_runs["devise"]], out, title="the earlier report").read_bytes()
    fresh = write_report([toy_runs["devise"]], tmp_path / "fresh.html", title="the later report").read_bytes()
    for n in range(1, 4):  # the learning curves (a scratch file), the report; then done
        with monkeypatch.context() as patch:
            kill_at(patch, n)
            try:
                write_report([toy_runs["devise"]], out, title="the later report")
                finished = True
            except Killed:
                finished = False
        assert out.read_bytes() == (fresh if finished else earlier), n
        assert sorted(path.name for path in tmp_path.iterdir()) == ["fresh.html", "report.html"]
    assert finished


def test_a_report_takes_an_exported_model_and_a_pretrained_name_and_says_what_each_is(demo, tmp_path, capsys):
    from devise.cli import main
    from devise.model.export import export

    exported = export(demo / "devise", tmp_path / "model")
    out = tmp_path / "models.html"
    assert main(["report", str(demo / "softmax"), str(exported), "efficientnet-lite0",
                 "--zeroshot", str(demo / "zeroshot-unseen"), "--out", str(out)]) == 0
    page = out.read_text()
    assert "<h2>Models</h2>" in page and "<td>model</td>" in page and "exported by devise" in page
    assert "<td>efficientnet-lite0</td>" in page and "ImageNet-1K" in page
    assert "<h2>Training</h2>" in page, "the run folder still brings its training"
    capsys.readouterr()
    assert main(["report", str(exported), str(tmp_path / "nothing"), "--out", str(tmp_path / "no.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing: no such run or model folder" in err
    assert not (tmp_path / "no.html").exists()
