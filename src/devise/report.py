"""One self-contained HTML page about one or more runs: tables, curves, hit@k, zero-shot figures.

Every figure is embedded as a base64 PNG and the page loads nothing else, so it opens offline
and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path

from devise import runs
from devise.errors import DeviseError
from devise.plots import plot_hit_at_k, plot_learning_curves

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


def table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def training_section(folders: list[Path], scratch: Path) -> str:
    rows = []
    for run in folders:
        summary = runs.read_summary(run) or {}
        rows.append([run.name, summary.get("head", "?"), summary.get("model", "?"), summary.get("image_size", "?"),
                     summary.get("epochs", "?"), summary.get("val_top1", float("nan")),
                     summary.get("val_top5", float("nan")), summary.get("train_minutes", float("nan"))])
    parts = ["<h2>Training</h2>", table(["run", "head", "model", "px", "epochs", "val top-1", "val top-5", "minutes"], rows),
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
    ks = sorted(int(key[4:]) for key in next(iter(results.values())) if key.startswith("hit@"))
    rows = [[name, m.get("loss", ""), m.get("label_space", ""), *[m[f"hit@{k}"] for k in ks]] for name, m in results.items()]
    chance = next(iter(results.values()))["chance"]
    rows.append(["chance", "", "", *[chance[f"hit@{k}"] for k in ks]])
    return "\n".join(["<h2>Ranked lookup: hit@k on the validation split</h2>",
                      table(["run", "loss", "label space", *[f"hit@{k}" for k in ks]], rows),
                      embed_png(plot_hit_at_k(results, scratch / "hitk.png", chance), "hit@k against k")])


def zero_shot_section(folder: Path) -> str:
    results = runs.read_zero_shot(folder)
    ks = sorted(int(key[4:]) for key in next(iter(results["models"].values())) if key.startswith("hit@"))
    gzsl = any("gzsl_harmonic" in m for m in results["models"].values())
    header = ["model", *[f"hit@{k}" for k in ks], "per-class top-1", "similarity", "lift"]
    header += ["GZSL S", "GZSL U", "GZSL H"] if gzsl else []
    rows = []
    for name, m in results["models"].items():
        row = [name, *[m[f"hit@{k}"] for k in ks], m["per_class_top1"], m["similarity"], m["lift"]]
        rows.append(row + ([m["gzsl_seen"], m["gzsl_unseen"], m["gzsl_harmonic"]] if gzsl else []))
    rows.append(["control (random label pairs)", *[""] * len(ks), "", results["control_similarity"], 0.0]
                + ([""] * 3 if gzsl else []))
    parts = [f"<h2>Zero-shot: {html.escape(str(results['target']))}</h2>",
             f'<p class="note">{results["images"]} images of {results["target_classes"]} classes; label space '
             f'{html.escape(results["label_space"])}; similarity over the vocabulary '
             f'"{html.escape(results["vocabulary"])}"; hit@k over the target labels.</p>',
             table(header, rows)]
    for name, alt in (("similarity.png", "semantic similarity bars"), ("examples.png", "example predictions")):
        if (folder / name).is_file():
            parts.append(embed_png(folder / name, alt))
    return "\n".join(parts)


def write_report(run_folders: list[str | Path], out: str | Path, title: str = "devise report",
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
