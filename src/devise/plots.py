"""Figures: learning curves of one run or several runs overlaid (the paper's Figures 2-4)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write and close a figure; returns the path written."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_learning_curves(runs: dict[str, list[dict]], path: Path, title: str | None = None) -> Path:
    """Train (dashed) and val (solid) top-1 accuracy and loss per epoch, one colour per run."""
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (name, rows) in enumerate(runs.items()):
        colour = f"C{i}"
        epochs = [r["epoch"] for r in rows]
        acc_ax.plot(epochs, [r["train_top1"] for r in rows], "--", color=colour, label=f"{name} train")
        acc_ax.plot(epochs, [r["val_top1"] for r in rows], "-o", color=colour, ms=3, label=f"{name} val")
        loss_ax.plot(epochs, [r["train_loss"] for r in rows], "--", color=colour, label=f"{name} train")
        loss_ax.plot(epochs, [r["val_loss"] for r in rows], "-o", color=colour, ms=3, label=f"{name} val")
    acc_ax.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    for ax in (acc_ax, loss_ax):
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
    return text if len(text) <= width else text[: width - 1] + "…"
