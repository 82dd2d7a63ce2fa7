"""One self-contained HTML page about one or more runs: tables, curves, hit@k, zero-shot figures.

Every figure is embedded as a base64 PNG and the page loads nothing else, so it opens offline
and can be mailed as one file. Whatever comes from a file is written as a number if it is one and
escaped otherwise (`text`), so a crafted results file cannot put markup or script in the page.
"""

from __future__ import annotations

import base64
import html
import re
import tempfile
from pathlib import Path

from devise.errors import DeviseError
from devise.plots import plot_hit_at_k, plot_learning_curves
from devise.training import runs

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #666; font-size: 0.9em; }
"""


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


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{text(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def hit_ks(result) -> list[int]:
    """The k of every `hit@k` key of a result, in order (other keys, however named, are not k)."""
    return sorted(int(m[1]) for key in result if (m := re.fullmatch(r"hit@(\d{1,4})", str(key)))) if isinstance(result, dict) else []


def numeric_hits(result) -> dict[str, float]:
    """The hit@k entries of a result that are numbers: what a plot can draw."""
    return {f"hit@{k}": result[f"hit@{k}"] for k in hit_ks(result) if is_number(result[f"hit@{k}"])}


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
        parts.append(embed_png(plot_learning_curves(curves, scratch / "curves.png", "learning curves"),
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
    drawable = {name: hits for name, m in results.items() if (hits := numeric_hits(m))}
    if drawable:
        parts.append(embed_png(plot_hit_at_k(drawable, scratch / "hitk.png", numeric_hits(chance)), "hit@k against k"))
    return "\n".join(parts)


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
             f'<p class="note">{text(results["images"])} images of {text(results["target_classes"])} classes; '
             f'label space {text(results["label_space"])}; similarity over the vocabulary '
             f'"{text(results["vocabulary"])}"; hit@k and hierarchical precision hp@k over the target labels.</p>',
             table(["model", *[c.replace("_", " ") for c in columns]], rows)]
    gzsl = [key for key in GZSL_COLUMNS if any(key in m for m in models.values())]
    if gzsl:
        parts += ["<h3>Generalised zero-shot: every label a candidate</h3>",
                  '<p class="note">Per-class top-1 on seen-class (S) and unseen-class (U) images, H their '
                  "harmonic mean; calibrated: a constant taken off the seen labels' scores, chosen on half of "
                  "the seen-class images only, by class splits (seen classes held out of a last layer retrained "
                  "on the model's features) or as the unseen labels' share; AUSUC: the area under the whole "
                  "seen-unseen curve.</p>",
                  table(["model", *[GZSL_COLUMNS[key] for key in gzsl]],
                        [[name, *[m.get(key, "") for key in gzsl]] for name, m in models.items()])]
    parts.append(body_section(models))
    for name, alt in (("similarity.png", "semantic similarity bars"), ("examples.png", "example predictions")):
        if (folder / name).is_file():
            parts.append(embed_png(folder / name, alt))
    return "\n".join(parts)


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
                 zero_shot: list[str | Path] = ()) -> Path:
    """Write the report of the runs (and of zero-shot output folders, found inside the runs
    when not given) to `out`; returns its path."""
    folders = [Path(r) for r in run_folders]
    for folder in folders:
        if not (folder / runs.CONFIG).is_file():
            raise DeviseError(f"{folder} is not a run folder (no {runs.CONFIG})")
    zero_shot_folders = [Path(z) for z in zero_shot] or sorted({z for f in folders for z in runs.zero_shot_folders(f)})
    with tempfile.TemporaryDirectory() as scratch:
        sections = [training_section(folders, Path(scratch)), hit_at_k_section(folders, Path(scratch))]
        sections += [zero_shot_section(z) for z in zero_shot_folders if runs.read_zero_shot(z) is not None]
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            + "\n".join(s for s in sections if s) + "\n</body></html>\n")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
