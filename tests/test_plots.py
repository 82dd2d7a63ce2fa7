"""Figures: what each one draws."""

from __future__ import annotations

import matplotlib.pyplot as plt

from devise import plots

ROWS = [{"epoch": 1, "train_top1": 0.1, "val_top1": 0.2, "train_loss": 2.3, "val_loss": 2.1},
        {"epoch": 2, "train_top1": 0.3, "val_top1": 0.4, "train_loss": 1.3, "val_loss": 1.2}]


def drawn_figures(monkeypatch) -> list:
    """The figures the plots draw, kept open instead of written."""
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, dpi=110: figures.append(fig) or path)
    return figures


def test_learning_curves_of_different_losses_get_an_axis_each(tmp_path, monkeypatch):
    drawn = drawn_figures(monkeypatch)
    plots.plot_learning_curves({"softmax": ROWS, "devise": ROWS}, tmp_path / "c.png",
                               losses={"softmax": "softmax cross-entropy", "devise": "embedding hinge loss"})
    plots.plot_learning_curves({"a": ROWS, "b": ROWS}, tmp_path / "c.png")
    two_kinds, one_kind = drawn
    assert [ax.get_title() for ax in two_kinds.axes] == ["accuracy", "softmax cross-entropy", "embedding hinge loss"]
    assert [len(ax.lines) for ax in two_kinds.axes] == [4, 2, 2]  # train and val of each run
    assert [ax.get_title() for ax in one_kind.axes] == ["accuracy", "loss"]
    for figure in drawn:
        plt.close(figure)


def test_the_report_figures_draw_what_zeroshot_json_holds(tmp_path, monkeypatch):
    drawn = drawn_figures(monkeypatch)
    plots.plot_confusion({"DeViSE": [[3, 1, 0], [0, 2, 2]]}, ["cat", "dog"], tmp_path / "m.png")
    plots.plot_seen_unseen({"DeViSE": {"unseen": [0, 0.5, 1], "seen": [1, 0.5, 0], "ausuc": 0.5,
                                       "plain": [0.1, 0.9], "calibrated": [0.5, 0.5]}}, tmp_path / "s.png")
    plots.plot_label_map({"DeViSE": {"images": [[0, 0], [1, 1]], "image_class": [0, 1], "labels": [[0, 1], [1, 0]]}},
                         ["cat", "dog"], tmp_path / "t.png")
    confusion, curve, label_map = drawn
    assert confusion.axes[0].images[0].get_array().tolist() == [[0.75, 0.25, 0.0], [0.0, 0.5, 0.5]]  # row shares
    assert [t.get_text() for t in confusion.axes[0].get_xticklabels()] == ["cat", "dog", "other"]
    assert "AUSUC 0.500" in curve.axes[0].get_legend().get_texts()[0].get_text()
    assert len(curve.axes[0].lines) == 3  # the curve, the point at constant 0, the calibrated point
    assert [t.get_text() for t in label_map.axes[0].texts] == ["cat", "dog"]
    for figure in drawn:
        plt.close(figure)
