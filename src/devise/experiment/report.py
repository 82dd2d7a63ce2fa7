"""One self-contained HTML page about one or more runs, to publish from: their settings, seed,
host and version; the summary (beside the paper's figures for Tiny ImageNet); curves; hit@k with
bootstrap intervals; and for zero-shot, per-class and confusion tables, the seen-unseen curve, a
t-SNE map of image and label vectors and the examples.

Every figure is embedded as a base64 PNG, the only script is the per-class table's sorting, and
the page loads nothing else, so it opens offline and can be mailed as one file. Whatever comes from a file is written as a number if it is one and
escaped otherwise (`text`), so a crafted results file cannot put markup or script in the page.
"""

from __future__ import annotations

import base64
import html
import re
import tempfile
import tomllib
from datetime import UTC, datetime
from pathlib import Path

from devise import files
from devise.errors import DeviseError
from devise.evaluation.metrics import share_interval
from devise.hardware import host_line
from devise.model.export import CONFIG_FILE
from devise.model.pretrained import KNOWN, is_pretrained_name
from devise.model.schema import read_config
from devise.plots import plot_confusion, plot_hit_at_k, plot_label_map, plot_learning_curves, plot_seen_unseen
from devise.training import runs
from devise.version import __version__

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #666; font-size: 0.9em; }
table.sortable th { cursor: pointer; } table.sortable th[data-order=up]::after { content: " \\25B2"; }
table.sortable th[data-order=down]::after { content: " \\25BC"; }
.examples { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 1.2em; }
.example { border: 1px solid #ddd; border-radius: 6px; padding: 0.7em; }
.example img { width: 128px; image-rendering: pixelated; }
.truth { margin: 0.2em 0 0.5em; } .model-name { font-weight: 600; font-size: 0.9em; margin-top: 0.4em; }
.bar-row { display: grid; grid-template-columns: 11em 1fr 3em 4.5em; gap: 0.4em; align-items: center; font-size: 0.85em; }
.bar-head { color: #777; font-size: 0.75em; } .bar-head span:last-child { text-align: right; }
.bar-label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bar { display: block; height: 0.8em; background: #9ab; } .bar-value { text-align: right; color: #555; }
.hit .bar { background: #2a8a3a; } .hit .bar-label { font-weight: 700; color: #1d6b2a; }
.miss { font-size: 0.8em; color: #a33; }
details summary { cursor: pointer; color: #444; }
"""

# Click a header of a `table.sortable` to sort its rows by that column (numbers as numbers), again to reverse.
SORT_SCRIPT = """<script>
document.querySelectorAll('table.sortable th').forEach((th, column) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const up = th.dataset.order !== 'up';
  th.parentNode.querySelectorAll('th').forEach(h => delete h.dataset.order);
  th.dataset.order = up ? 'up' : 'down';
  const key = row => { const t = row.cells[column].textContent.trim(); const n = parseFloat(t);
                       return t === '' ? -Infinity : isNaN(n) ? t : n; };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b);
    const order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
    return up ? order : -order; });
  rows.forEach(row => body.appendChild(row));
}));
</script>"""


def embed_png(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def text(value) -> str:
    """Anything read from a file, for the page: a number formatted as one, all else escaped."""
    if is_number(value):
        return f"{value:.4f}" if isinstance(value, float) else str(value)
    return html.escape(str(value))


def table(header: list[str], rows: list[list], *, sortable: bool = False) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{text(v)}</td>" for v in row) + "</tr>" for row in rows)
    kind = ' class="sortable"' if sortable else ""
    return f"<table{kind}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def hit_ks(result) -> list[int]:
    """The k of every `hit@k` key of a result, in order (other keys, however named, are not k)."""
    return sorted(int(m[1]) for key in result if (m := re.fullmatch(r"hit@(\d{1,4})", str(key)))) if isinstance(result, dict) else []


def numeric_hits(result) -> dict[str, float]:
    """The hit@k entries of a result that are numbers: what a plot can draw."""
    return {f"hit@{k}": result[f"hit@{k}"] for k in hit_ks(result) if is_number(result[f"hit@{k}"])}


def read_settings(run: Path) -> dict:
    """A run's config.toml as written, for showing: {} where it does not parse (the page still comes)."""
    try:
        return tomllib.loads((run / runs.CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def loss_kind(settings: dict) -> str:
    """The name of a run's loss, for its own axis: a softmax's cross-entropy and an embedding's
    hinge or rank loss are on different scales."""
    if settings.get("head") == "softmax":
        return "softmax cross-entropy"
    return f"embedding {settings.get('loss', '')} loss".replace("  ", " ")


def host_of(summary: dict) -> str:
    host = summary.get("host")
    try:
        return host_line(host)
    except (KeyError, TypeError, AttributeError):
        return "not recorded"


PROVENANCE = ("data", "head", "body", "vectors", "epochs", "batch_size", "lr", "image_size", "unseen", "unseen_seed",
              "seed")


def provenance_section(folders: list[Path]) -> str:
    """What made these figures: devise's version, the date, each run's host, seed and main settings,
    and every setting of every run (folded)."""
    settings = {run.name: read_settings(run) for run in folders}
    summaries = {run.name: runs.read_summary(run) or {} for run in folders}
    rows, hosts = [], []
    for run in folders:
        done = run / runs.SUMMARY
        finished = (datetime.fromtimestamp(done.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M")
                    if done.is_file() else "not finished")
        found = settings[run.name]
        rows.append([run.name, *[found.get(key, "") for key in PROVENANCE[:4]], loss_kind(found),
                     *[found.get(key, "") for key in PROVENANCE[4:]], finished])
        hosts.append(f"{text(run.name)}: {text(host_of(summaries[run.name]))}")
    every = list(dict.fromkeys(key for found in settings.values() for key in found))
    full = table(["setting", *settings], [[key, *[found.get(key, "") for found in settings.values()]] for key in every])
    written = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return ("<h2>Settings, seed and host</h2>"
            f'<p class="note">Written {written} by devise {html.escape(__version__)}. Each run\'s settings are its '
            "config.toml; its host and finish time, its summary.json.</p>"
            + table(["run", *[key.replace("_", " ") for key in PROVENANCE[:4]], "loss",
                     *[key.replace("_", " ") for key in PROVENANCE[4:]], "finished (UTC)"], rows)
            + '<p class="note">Host: ' + "; ".join(hosts) + ".</p>"
            + f"<details><summary>Every setting of every run</summary>{full}</details>")


def describe_model(path: str) -> list:
    """A row saying what a model that is not a run folder is: an exported folder (its config.json,
    checked as `devise.load` checks it) or a pretrained classifier devise knows by name."""
    folder = Path(path).expanduser()
    if (folder / CONFIG_FILE).is_file():
        config = read_config(folder / CONFIG_FILE)
        architecture = config["architecture"]
        body = architecture.get("body", architecture.get("model", "?"))
        trained_on = (config.get("body_trained_on") or {}).get("description", "not recorded")
        return [folder.name, f"exported by devise {config.get('devise_version', '?')}", config["kind"], body,
                config["image_size"], config["label_space"].get("name", "?"), len(config["labels"]), trained_on]
    if is_pretrained_name(path):
        weights = KNOWN[path]
        return [path, f"pretrained classifier ({weights.source}, {weights.licence})", "softmax", weights.architecture,
                weights.input_size, "ConSE over its labels", 1000, weights.trained_on]
    if not folder.exists():
        raise DeviseError(f"{path}: no such run or model folder, nor a pretrained model devise knows ({', '.join(KNOWN)})")
    raise DeviseError(f"{path} is neither a run folder (no {runs.CONFIG}) nor an exported model (no {CONFIG_FILE})")


def models_section(rows: list[list]) -> str:
    """What each model that came without a run folder is; its figures are in the zero-shot sections."""
    if not rows:
        return ""
    return ("<h2>Models</h2>"
            + table(["model", "what", "kind", "body", "px", "label space", "training labels", "its body was trained on"],
                    rows)
            + '<p class="note">Exported folders and pretrained classifiers keep no training history: their figures '
              "are those of the zero-shot results below (<code>devise zeroshot MODEL</code>, then "
              "<code>devise report MODEL --zeroshot FOLDER</code>).</p>")


def comparison_section(summary: str | None) -> str:
    """The experiment's summary table (summary.md, a Markdown table) as HTML: the same rows, beside
    the paper's figures only where summary.md puts them there (Tiny ImageNet)."""
    if not summary:
        return ""
    lines = [line.strip() for line in summary.splitlines() if line.strip()]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines
             if line.startswith("|") and not re.fullmatch(r"\|[-| :]+\|", line)]
    notes = [line for line in lines if not line.startswith("|")]
    if not cells:
        return ""
    paper = any("paper" in c for c in cells[0])
    return (f"<h2>{'Comparison with the paper' if paper else 'Summary'}</h2>"
            + ('<p class="note">The paper\'s figures are as it reports them (a student report on Tiny ImageNet); '
               "ours are this experiment's. The same table is summary.md.</p>" if paper else
               '<p class="note">This experiment\'s headline figures (summary.md). Its dataset is not the '
               "paper's, so they stand alone.</p>")
            + table(cells[0], cells[1:]) + "".join(f'<p class="note">{text(note)}</p>' for note in notes))


def training_section(folders: list[Path], scratch: Path) -> str:
    rows = []
    for run in folders:
        summary = runs.read_summary(run) or {}
        body = summary.get("body", summary.get("model", "?"))  # runs before timm bodies called it "model"
        body = f"{body} (pretrained)" if summary.get("pretrained") else body
        rows.append([run.name, summary.get("head", "?"), body,
                     *[summary.get(key, "?") for key in ("image_size", "epochs", "val_top1", "val_top5", "train_minutes")]])
    parts = ["<h2>Training</h2>", table(["run", "head", "body", "px", "epochs", "val top-1", "val top-5", "minutes"], rows),
             '<p class="note">For embedding runs, top-k is the ranked lookup among the training labels.</p>']
    curves = {run.name: runs.read_metrics(run) for run in folders}
    curves = {name: rows for name, rows in curves.items() if rows}
    if curves:
        losses = {run.name: loss_kind(read_settings(run)) for run in folders}
        parts.append(embed_png(plot_learning_curves(curves, scratch / "curves.png", "learning curves", losses=losses),
                               "learning curves"))
    return "\n".join(parts)


def hit_at_k_section(folders: list[Path], scratch: Path) -> str:
    results = {run.name: m for run in folders if (m := runs.read_evaluation(run))}
    if not results:
        return ""
    ks = hit_ks(next(iter(results.values())))
    rows = [[name, m.get("loss", ""), m.get("label_space", ""), *[m.get(f"hit@{k}", "") for k in ks]]
            for name, m in results.items()]
    chance = next(iter(results.values())).get("chance")
    chance = chance if isinstance(chance, dict) else {}
    rows.append(["chance", "", "", *[chance.get(f"hit@{k}", "") for k in ks]])
    parts = ["<h2>Ranked lookup: hit@k on the validation split</h2>",
             table(["run", "loss", "label space", *[f"hit@{k}" for k in ks]], rows)]
    parts.append(interval_table(evaluation_intervals(results), "run"))
    drawable = {name: hits for name, m in results.items() if (hits := numeric_hits(m))}
    if drawable:
        parts.append(embed_png(plot_hit_at_k(drawable, scratch / "hitk.png", numeric_hits(chance)), "hit@k against k"))
    return "\n".join(parts)


INTERVAL_KS = (1, 5)


def interval_table(rows: list[list], first: str) -> str:
    """hit@1 and hit@5 with their 95% intervals, from [name, images, (hit@1, low, high), (hit@5,
    low, high)] rows."""
    if not rows:
        return ""
    header = [first, "images", *[c for k in INTERVAL_KS for c in (f"hit@{k}", f"hit@{k} 95% interval")]]
    body = [[name, images, *[c for hit, low, high in figures for c in (hit, f"{low:.4f} to {high:.4f}")]]
            for name, images, *figures in rows]
    return ('<p class="note">95% percentile bootstrap intervals over the images (1,000 resamples, seeded): '
            "how far the figure could move on another draw of as many images.</p>" + table(header, body))


def evaluation_intervals(results: dict[str, dict]) -> list[list]:
    """Interval rows for `devise evaluate`'s results, which keep hit@k and the image count: the
    resampled sum of N 0/1 hits is Binomial(N, hit@k) (`devise.evaluation.metrics.share_interval`),
    the same interval zeroshot.json stores for its figures."""
    rows = []
    for name, m in results.items():
        images, hits = m.get("images"), [m.get(f"hit@{k}") for k in INTERVAL_KS]
        if is_number(images) and images > 0 and all(is_number(h) and 0 <= h <= 1 for h in hits):
            rows.append([name, images, *[(h, *share_interval(float(h), int(images))) for h in hits]])
    return rows


def zero_shot_intervals(models: dict[str, dict], images) -> list[list]:
    """Interval rows for the models of a zeroshot.json, from the intervals it stores."""
    rows = []
    for name, m in models.items():
        stored = m.get("interval_95") if isinstance(m.get("interval_95"), dict) else {}
        figures = [(m.get(f"hit@{k}"), *(stored.get(f"hit@{k}") or [None, None])) for k in INTERVAL_KS]
        if all(len(f) == 3 and all(is_number(v) for v in f) for f in figures):
            rows.append([name, images, *figures])
    return rows


GZSL_COLUMNS = {"gzsl_seen": "S", "gzsl_unseen": "U", "gzsl_harmonic": "H", "gzsl_gamma": "calibration constant",
                "calibration": "constant chosen by",
                "gzsl_cal_seen": "calibrated S", "gzsl_cal_unseen": "calibrated U", "gzsl_cal_harmonic": "calibrated H",
                "gzsl_ausuc": "AUSUC", "gzsl_best_harmonic": "best H on the curve"}


def zero_shot_section(folder: Path) -> str:
    results = runs.read_zero_shot(folder)
    models = results["models"] if isinstance(results["models"], dict) else {}
    models = {name: m for name, m in models.items() if isinstance(m, dict)}
    first = next(iter(models.values()), {})
    ks = hit_ks(first)
    hierarchy = [key for key in first if re.fullmatch(r"hp@\d{1,4}", str(key))]
    columns = [*[f"hit@{k}" for k in ks], *hierarchy, "per_class_top1", "similarity", "lift"]
    rows = [[name, *[m.get(column, "") for column in columns]] for name, m in models.items()]
    rows.append(["control (random label pairs)", *[""] * (len(columns) - 2), results["control_similarity"], 0.0])
    parts = [f"<h2>Zero-shot: {text(results['target'])}</h2>",
             (f'<p class="note">{text(results["images"])} images of {text(results["target_classes"])} classes; '
              f'label space {text(results["label_space"])}; similarity over the vocabulary '
              f'"{text(results["vocabulary"])}"; hit@k and hierarchical precision hp@k over the target labels.</p>'),
             table(["model", *[c.replace("_", " ") for c in columns]], rows)]
    gzsl = [key for key in GZSL_COLUMNS if any(key in m for m in models.values())]
    if gzsl:
        parts += ["<h3>Generalised zero-shot: every label a candidate</h3>",
                  ('<p class="note">Per-class top-1 on seen-class (S) and unseen-class (U) images, H their '
                   "harmonic mean; calibrated: a constant taken off the seen labels' scores, chosen on half of "
                   "the seen-class images only, by class splits (seen classes held out of a last layer retrained "
                   "on the model's features) or as the unseen labels' share; AUSUC: the area under the whole "
                   "seen-unseen curve.</p>"),
                  table(["model", *[GZSL_COLUMNS[key] for key in gzsl]],
                        [[name, *[m.get(key, "") for key in gzsl]] for name, m in models.items()])]
    parts.append(body_section(models))
    if (folder / "similarity.png").is_file():
        parts.append(embed_png(folder / "similarity.png", "semantic similarity bars"))
    parts.append(interval_table(zero_shot_intervals(models, results["images"]), "model"))
    with tempfile.TemporaryDirectory() as scratch:
        parts += [seen_unseen_section(models, Path(scratch)), per_class_section(results, models),
                  confusion_section(results, models, Path(scratch)), map_section(results, models, Path(scratch))]
    examples = examples_section(results.get("examples"))
    if not examples and (folder / "examples.png").is_file():  # results written before the examples' images were kept
        examples = embed_png(folder / "examples.png", "example predictions")
    parts.append(examples)
    return "\n".join(p for p in parts if p)


def numbers(value, length: int | None = None) -> bool:
    """Whether `value` (read from a file) is a list of numbers, of `length` when given."""
    return (isinstance(value, list) and all(is_number(v) for v in value)
            and (length is None or len(value) == length))


def class_names(results: dict) -> list[str]:
    names = results.get("class_names")
    return names if isinstance(names, list) and names and all(isinstance(n, str) for n in names) else []


def seen_unseen_section(models: dict[str, dict], scratch: Path) -> str:
    """The seen-unseen curve of each model with generalised zero-shot figures, AUSUC its area."""
    curves = {}
    for name, m in models.items():
        curve = m.get("seen_unseen_curve")
        if not (isinstance(curve, dict) and numbers(curve.get("unseen")) and is_number(m.get("gzsl_ausuc"))
                and numbers(curve.get("seen"), len(curve["unseen"]))):
            continue
        points = {key: [m.get(f"gzsl_{middle}unseen"), m.get(f"gzsl_{middle}seen")]
                  for key, middle in (("plain", ""), ("calibrated", "cal_"))}
        curves[name] = {"unseen": curve["unseen"], "seen": curve["seen"], "ausuc": m["gzsl_ausuc"],
                        **{key: xy for key, xy in points.items() if numbers(xy, 2)}}
    if not curves:
        return ""
    return ("<h3>The seen-unseen curve</h3>"
            '<p class="note">Calibrated stacking\'s constant swept from naming every image with a seen label '
            "to naming every one with an unseen label; AUSUC is the area under the curve (Chao et al. 2016).</p>"
            + embed_png(plot_seen_unseen(curves, scratch / "seen_unseen.png"), "seen-unseen curves"))


def per_class_section(results: dict, models: dict[str, dict]) -> str:
    """Each target class's hit@1 and hit@5 for every model: a table sorted by a click on a column."""
    names = class_names(results)
    tables = {name: m["per_class"] for name, m in models.items() if isinstance(m.get("per_class"), dict)}
    columns = {f"{name} hit@{k}": figures.get(f"hit@{k}") for name, figures in tables.items() for k in INTERVAL_KS}
    columns = {title: values for title, values in columns.items()
               if isinstance(values, list) and len(values) == len(names)}
    if not names or not columns:
        return ""
    counts = next(iter(tables.values())).get("images")
    counts = counts if numbers(counts, len(names)) else [""] * len(names)
    rows = [[name, counts[c], *[values[c] if is_number(values[c]) else "" for values in columns.values()]]
            for c, name in enumerate(names)]
    return ("<h3>Per class</h3>"
            '<p class="note">hit@1 and hit@5 of each target class, over the target labels (softmax: over its '
            "training labels). Click a column's header to sort by it.</p>"
            + table(["class", "images", *columns], rows, sortable=True))


def confusion_section(results: dict, models: dict[str, dict], scratch: Path) -> str:
    """Which target class each class's images are named as, for the models that name target
    classes at all (not softmax, whose labels are its training classes)."""
    names = class_names(results)
    matrices = {}
    for name, m in models.items():
        counts = m.get("confusion")
        if (names and isinstance(counts, list) and len(counts) == len(names)
                and all(numbers(row, len(names) + 1) for row in counts)
                and any(sum(row[:-1]) for row in counts)):
            matrices[name] = counts
    if not matrices:
        return ""
    return ("<h3>Confusion over the target classes</h3>"
            '<p class="note">Rows: the true class; columns: the first label among the target labels, as a share '
            "of the row's images; \"other\": a first label outside the target.</p>"
            + embed_png(plot_confusion(matrices, names, scratch / "confusion.png"), "confusion matrices"))


def map_section(results: dict, models: dict[str, dict], scratch: Path) -> str:
    """The 2-D t-SNE map of a sample of image vectors with the target's label vectors."""
    names = class_names(results)
    maps = {}
    for name, m in models.items():
        found = m.get("map")
        if not (names and isinstance(found, dict)):
            continue
        images, classes, labels = found.get("images"), found.get("image_class"), found.get("labels")
        if (isinstance(images, list) and all(numbers(xy, 2) for xy in images) and numbers(classes, len(images))
                and all(isinstance(c, int) and 0 <= c < len(names) for c in classes)
                and isinstance(labels, list) and len(labels) == len(names) and all(numbers(xy, 2) for xy in labels)):
            maps[name] = {"images": images, "image_class": classes, "labels": labels}
    if not maps:
        return ""
    return ("<h3>Image vectors and label vectors in two dimensions</h3>"
            '<p class="note">t-SNE (scikit-learn) of up to 300 target images\' vectors (dots, coloured by true class) '
            "together with the target labels' vectors (crosses), each set less its own mean (a part shared by "
            "every label changes no ranking): where a class's images gather at its own label, the model names "
            "it. Distances in a t-SNE map are only locally meaningful.</p>"
            + embed_png(plot_label_map(maps, names, scratch / "map.png"), "2-D map of image and label vectors"))


BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def examples_section(examples) -> str:
    """The example images as images, each with every model's top 5 as bars of its scores, the true
    label marked where a model ranks it, and each label's cosine similarity to the true label."""
    if not isinstance(examples, dict):
        return ""
    images, truths, predictions = examples.get("images"), examples.get("true"), examples.get("predictions")
    scores = examples.get("scores") if isinstance(examples.get("scores"), dict) else {}
    if not (isinstance(images, list) and isinstance(truths, list) and len(images) == len(truths) and images
            and all(isinstance(i, str) and BASE64.fullmatch(i) for i in images) and isinstance(predictions, dict)):
        return ""
    cards = []
    for r, (image, truth) in enumerate(zip(images, truths)):
        bars = [model_bars(model, lists[r], row_of(scores.get(model), r, len(images)), truth)
                for model, lists in predictions.items() if isinstance(lists, list) and len(lists) == len(images)]
        cards.append(f'<div class="example"><img alt="example {r + 1}" src="data:image/png;base64,{image}">'
                     f'<div class="truth">true label: <b>{text(truth)}</b></div>'
                     '<div class="bar-row bar-head"><span></span><span>score</span><span></span>'
                     f'<span>cos to true</span></div>{"".join(bars)}</div>')
    return ("<h3>Examples</h3>"
            '<p class="note">Each model\'s top 5 among the vocabulary, a bar for its score (cosine for DeViSE and '
            "ConSE, probability for softmax; the longest bar its first), the true label in green with a tick "
            "where ranked; last, each label's cosine similarity to the true label (the paper's Figures 6-7).</p>"
            f'<div class="examples">{"".join(cards)}</div>')


def row_of(rows, r: int, count: int):
    return rows[r] if isinstance(rows, list) and len(rows) == count else None


def model_bars(model: str, ranked, scores, truth) -> str:
    """One model's top 5 for one image as labelled bars of its scores (of the similarity to the
    true label for results that did not keep the scores)."""
    entries = [e for e in (ranked if isinstance(ranked, list) else [])
               if isinstance(e, list) and len(e) == 2 and is_number(e[1])]
    scores = scores if numbers(scores, len(entries)) and entries else [e[1] for e in entries]
    longest = max([abs(float(v)) for v in scores] + [1e-12])
    rows = []
    for (label, similarity), score in zip(entries, scores):
        hit = label == truth
        width = min(max(float(score) / longest, 0.0), 1.0) * 100
        rows.append(f'<div class="bar-row{" hit" if hit else ""}"><span class="bar-label" title="{text(label)}">'
                    f'{"&#10003; " if hit else ""}{text(label)}</span><span><span class="bar" style="width: '
                    f'{width:.1f}%"></span></span><span class="bar-value">{float(score):.2f}</span>'
                    f'<span class="bar-value">{float(similarity):+.2f}</span></div>')
    miss = "" if any(e[0] == truth for e in entries) else '<div class="miss">the true label is not in its top 5</div>'
    return f'<div class="model-name">{text(model)}</div>{"".join(rows)}{miss}'


BODY_PARTS = {"unseen": "classes its body never trained on (zero-shot)", "seen": "classes its body trained on (transfer)",
              "unknown": "classes whose training is not known"}


def body_section(models: dict) -> str:
    """The target's classes split by what each model's body was trained on, with hit@k for each
    part: only the first part is zero-shot."""
    rows = []
    for name, m in models.items():
        body = m.get("body")
        if not isinstance(body, dict):
            continue
        for part, meaning in BODY_PARTS.items():
            figures = body.get(part)
            if isinstance(figures, dict) and figures.get("classes"):
                rows.append([name, body.get("trained_on", ""), meaning, figures.get("classes", ""),
                             figures.get("images", ""), *[figures.get(f"hit@{k}", "") for k in (1, 5, 10)]])
    if not rows:
        return ""
    return ("<h3>What the bodies had seen</h3>"
            '<p class="note">A figure is zero-shot only over classes that neither the head nor the body was trained '
            "on; a body pretrained on ImageNet has seen every Tiny ImageNet class, and its figures there are "
            "transfer. Classes are matched by WordNet id, or by name as a WordNet noun.</p>"
            + table(["model", "body trained on", "target classes", "classes", "images", "hit@1", "hit@5", "hit@10"],
                    rows))


def write_report(run_folders: list[str | Path], out: str | Path, *, title: str = "devise report",
                 zero_shot: list[str | Path] = (), summary: str | None = None) -> Path:
    """Write the report of the models (and of zero-shot output folders, found inside the runs
    when not given) to `out`; returns its path. A run folder brings its settings, training and
    hit@k; an exported folder or a pretrained classifier's name, what the model is (it keeps no
    training history). `summary`: the experiment's summary.md table
    (`devise.experiment.reproduce.summary_table`), shown first."""
    folders = [Path(r) for r in run_folders if (Path(r).expanduser() / runs.CONFIG).is_file()]
    others = [str(r) for r in run_folders if not (Path(r).expanduser() / runs.CONFIG).is_file()]
    described = [describe_model(other) for other in others]  # every path checked before anything is written
    zero_shot_folders = [Path(z) for z in zero_shot] or sorted({z for f in folders for z in runs.zero_shot_folders(f)})
    with tempfile.TemporaryDirectory() as scratch:
        sections = [provenance_section(folders) if folders else "", models_section(described),
                    comparison_section(summary)]
        if folders:
            sections += [training_section(folders, Path(scratch)), hit_at_k_section(folders, Path(scratch))]
        sections += [zero_shot_section(z) for z in zero_shot_folders if runs.read_zero_shot(z) is not None]
        sections.append(SORT_SCRIPT)
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            + "\n".join(s for s in sections if s) + "\n</body></html>\n")
    out = Path(out)
    files.make_folder(out.parent, what="the report")
    return files.write_file(out, page, what="the report")  # all or nothing: an earlier report stays whole
