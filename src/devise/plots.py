"""Figures: learning curves of one run or several runs overlaid (the paper's Figures 2-4)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed
import matplotlib.pyplot as plt

from devise import files


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write (all or nothing: `devise.files.write_with`) and close a figure; returns the
    path written."""
    path = Path(path)
    try:
        fig.tight_layout()
        kind = path.suffix.lstrip(".").lower() or "png"
        files.write_with(path, lambda handle: fig.savefig(handle, dpi=dpi, format=kind), what="the figure")
    finally:
        plt.close(fig)
    return path


def plot_learning_curves(runs: dict[str, list[dict]], path: Path, title: str | None = None, *,
                         losses: dict[str, str] | None = None) -> Path:
    """Train (dashed) and val (solid) top-1 accuracy and loss per epoch, one colour per run. Runs
    whose losses differ in kind (`losses`: run name -> the loss's name, e.g. softmax's
    cross-entropy beside DeViSE's hinge) get a loss panel each: their scales do not compare."""
    kinds = list(dict.fromkeys((losses or {}).get(name, "loss") for name in runs)) or ["loss"]
    fig, axes = plt.subplots(1, 1 + len(kinds), figsize=(5.5 * (1 + len(kinds)), 4.2), squeeze=False)
    acc_ax, loss_axes = axes[0][0], dict(zip(kinds, axes[0][1:]))
    for i, (name, rows) in enumerate(runs.items()):
        colour = f"C{i}"
        loss_ax = loss_axes[(losses or {}).get(name, "loss")]
        epochs = [r["epoch"] for r in rows]
        acc_ax.plot(epochs, [r["train_top1"] for r in rows], "--", color=colour, label=f"{name} train")
        acc_ax.plot(epochs, [r["val_top1"] for r in rows], "-o", color=colour, ms=3, label=f"{name} val")
        loss_ax.plot(epochs, [r["train_loss"] for r in rows], "--", color=colour, label=f"{name} train")
        loss_ax.plot(epochs, [r["val_loss"] for r in rows], "-o", color=colour, ms=3, label=f"{name} val")
    acc_ax.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy")
    for kind, loss_ax in loss_axes.items():
        loss_ax.set(xlabel="epoch", ylabel=shorten(kind, 60), title=shorten(kind, 60))
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=110)


def plot_hit_at_k(results: dict[str, dict], path: Path, chance: dict[str, float] | None = None) -> Path:
    """hit@k against k, one line per run (and chance), as in the paper's comparison."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (name, result) in enumerate(results.items()):
        ks = sorted(int(key[4:]) for key in result if key.startswith("hit@"))
        ax.plot(ks, [result[f"hit@{k}"] for k in ks], "-o", color=f"C{i}", ms=4, label=name)
    if chance:
        ks = sorted(int(key[4:]) for key in chance)
        ax.plot(ks, [chance[f"hit@{k}"] for k in ks], ":", color="grey", label="chance")
    ax.set(xlabel="k", ylabel="hit@k", xscale="log", title="true label among the k nearest")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=110)


def plot_similarity(results: dict, path: Path) -> Path:
    """The paper's Figure 8: mean similarity of top-3 predictions to the true label, per model,
    beside the random-pair control."""
    names = list(results["models"]) + ["control (random pairs)"]
    values = [m["similarity"] for m in results["models"].values()] + [results["control_similarity"]]
    colours = [f"C{i}" for i in range(len(names) - 1)] + ["grey"]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(names)), 4))
    bars = ax.bar(range(len(names)), values, color=colours)
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=15, ha="right", fontsize=8)
    ax.set(ylabel="mean cosine similarity", title=f"semantic similarity of top-3 ({results['label_space']})")
    return save_figure(fig, path, dpi=110)


def plot_examples(images, true_labels: list[str], predictions: dict[str, list[list[tuple[str, float]]]],
                  path: Path) -> Path:
    """The paper's Figures 6-7: each image beside every model's top-5, each label with its cosine
    similarity to the true label."""
    rows, columns = len(images), 1 + len(predictions)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 + 3.3 * len(predictions), 2.0 * rows), squeeze=False)
    for r in range(rows):
        axes[r][0].imshow(images[r].permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[r][0].set_title(f"true: {shorten(true_labels[r], 28)}", fontsize=8)
        for c, (model, lists) in enumerate(predictions.items(), start=1):
            lines = [f"{i + 1}. {shorten(label, 30)}  ({sim:+.2f})" for i, (label, sim) in enumerate(lists[r])]
            axes[r][c].text(0.0, 0.95, "\n".join(lines), va="top", ha="left", fontsize=7.5, family="monospace")
            if r == 0:
                axes[r][c].set_title(model, fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        for c in range(1, columns):
            axes[r][c].axis("off")
    return save_figure(fig, path, dpi=100)


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` characters, its dollar signs kept literal (matplotlib reads "$...$"
    as mathematics, and a label from a file is not)."""
    text = str(text) if len(str(text)) <= width else str(text)[: width - 1] + "…"
    return text.replace("$", r"\$")


def plot_confusion(matrices: dict[str, list[list[int]]], class_names: list[str], path: Path) -> Path:
    """One panel per model: the share of each true class's images (rows) whose first label is each
    target class (columns), a last column for a first label outside the target."""
    names = [shorten(n, 18) for n in class_names]
    side = max(4.0, 0.28 * len(names) + 2.5)
    fig, axes = plt.subplots(1, len(matrices), figsize=(side * len(matrices), side), squeeze=False)
    for ax, (model, counts) in zip(axes[0], matrices.items()):
        rows = [[v / max(sum(row), 1) for v in row] for row in counts]
        picture = ax.imshow(rows, vmin=0, vmax=1, cmap="Blues")
        ticks = len(names) <= 40  # more would be unreadable
        ax.set_xticks(range(len(names) + 1), [*names, "other"] if ticks else [""] * (len(names) + 1),
                      rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names if ticks else [""] * len(names), fontsize=7)
        ax.set(xlabel="first label", ylabel="true class", title=shorten(model, 40))
        fig.colorbar(picture, ax=ax, fraction=0.046, pad=0.04, label="share of the class's images")
    return save_figure(fig, path, dpi=100)


def plot_seen_unseen(curves: dict[str, dict], path: Path) -> Path:
    """The seen-unseen curves of calibrated stacking (Chao et al. 2016): per-class accuracy on
    seen-class images (S) against unseen-class images (U) as the constant sweeps, AUSUC the area
    under each; a circle where the constant is 0, a star at the calibrated constant."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for i, (model, curve) in enumerate(curves.items()):
        colour = f"C{i}"
        ax.plot(curve["unseen"], curve["seen"], "-", color=colour, label=f"{shorten(model, 36)}: AUSUC {curve['ausuc']:.3f}")
        if curve.get("plain"):
            ax.plot(*curve["plain"], "o", color=colour, ms=7, mfc="white")
        if curve.get("calibrated"):
            ax.plot(*curve["calibrated"], "*", color=colour, ms=12)
    ax.set(xlabel="U: per-class top-1 on unseen-class images", ylabel="S: per-class top-1 on seen-class images",
           xlim=(0, 1), ylim=(0, 1), title="seen-unseen curve (o: constant 0, *: calibrated)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path, dpi=110)


def plot_label_map(maps: dict[str, dict], class_names: list[str], path: Path) -> Path:
    """One panel per model: its 2-D map (t-SNE) of image vectors (dots, coloured by true class)
    with the target's label vectors (labelled crosses of the same colour)."""
    fig, axes = plt.subplots(1, len(maps), figsize=(6.2 * len(maps), 6), squeeze=False)
    colours = plt.get_cmap("tab20" if len(class_names) > 10 else "tab10")
    for ax, (model, found) in zip(axes[0], maps.items()):
        images = found["images"]
        ax.scatter([p[0] for p in images], [p[1] for p in images], s=9, alpha=0.6,
                   c=[colours(c % colours.N) for c in found["image_class"]])
        for c, (x, y) in enumerate(found["labels"]):
            ax.plot(x, y, "X", ms=11, color=colours(c % colours.N), mec="black")
            if len(class_names) <= 40:
                ax.annotate(shorten(class_names[c], 20), (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set(xticks=[], yticks=[], title=f"{shorten(model, 40)}: images (dots) and labels (X)")
    return save_figure(fig, path, dpi=100)
