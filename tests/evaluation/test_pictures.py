"""The pictures the CLI writes, read back from their matplotlib Figures (no pixels): every axis
labelled, each quantity on its own axis, titles, legends, readable annotations."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def plot_axes(fig):
    """The figure's plotting axes (not colorbars)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_pooling_along_document_gives_share_and_entropy_their_own_axes():
    from smt.evaluation.analysis import pooling_along_document_figure

    writes = 40
    stats = {"memory_share_by_write": [0.0] * writes, "entropy_by_write": [math.log(64)] * writes,
             "max_entropy_by_write": [math.log(64)] * writes, "uniform": True}
    fig = pooling_along_document_figure(stats, stride=16, pools_memory=False)
    share, entropy = plot_axes(fig)
    assert "memory" in share.get_ylabel() and "entropy" not in share.get_ylabel()
    assert "entropy" in entropy.get_ylabel() and "weight" not in entropy.get_ylabel()
    assert entropy.get_xlabel() == "token position of the write"
    # a share of 0 is drawn inside the axes, above the x axis, not on it
    (line,) = share.get_lines()
    bottom, top = share.get_ylim()
    assert bottom < min(line.get_ydata()) and top > 1
    assert "tokens only" in line.get_label()
    # the entropy and its maximum on the entropy axis, each in the legend
    assert [text.get_text() for text in entropy.get_legend().get_texts()] == [
        "entropy of the pooling", "maximum: uniform over the positions a write can weigh"]
    assert max(entropy.get_lines()[1].get_ydata()) < entropy.get_ylim()[1]
    assert share.get_legend() is not None
    assert fig.get_suptitle() == "attention pooling along the document (uniform)"


def test_passkey_heatmap_writes_white_on_dark_cells_and_black_on_light_ones():
    import numpy as np

    from smt.evaluation.passkey import PasskeyGrid, passkey_heatmap_figure

    exact = np.array([[0.0, 0.5], [1.0, 0.3]])  # dark red, pale yellow / dark green, orange
    grid = PasskeyGrid([128, 256], [0.0, 1.0], exact, exact, n_samples=4)
    fig = passkey_heatmap_figure({"smt": grid, "swa": grid})
    for ax in plot_axes(fig):
        colors = {text.get_text(): text.get_color() for text in ax.texts}
        assert colors == {"0.00": "white", "0.50": "black", "1.00": "white", "0.30": "black"}
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() in ("smt", "swa")
    assert "passkey retrieval" in fig.get_suptitle()


def test_text_color_follows_the_cell_luminance():
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    from smt.evaluation.figures import text_color_on

    norm = Normalize(0, 1)
    assert text_color_on(colormaps["viridis"], norm, 0.0) == "white"  # dark purple
    assert text_color_on(colormaps["viridis"], norm, 1.0) == "black"  # light yellow
    assert text_color_on(colormaps["Greys"], norm, 1.0) == "white"  # black
    assert text_color_on(colormaps["Greys"], norm, 0.0) == "black"  # white
    assert text_color_on(colormaps["RdYlGn"], norm, float("nan")) == "black"


def test_loss_curve_is_titled_with_the_run_name_and_labelled(tmp_path, monkeypatch):
    from smt.training import logging as run_logging

    records = [{"split": "train", "step": s, "loss": 5.0 - 0.1 * s} for s in range(1, 11)]
    records.append({"split": "valid", "step": 10, "loss": 4.2})
    made = []

    def keep(*args, **kwargs):
        made.append(figure_of(*args, **kwargs))
        return made[-1]

    figure_of = run_logging.loss_curve_figure
    monkeypatch.setattr(run_logging, "loss_curve_figure", keep)
    (tmp_path / "wiki_smt_lr3e-4").mkdir()
    path = run_logging.plot_loss_curve(records, tmp_path / "wiki_smt_lr3e-4" / "loss_curve.png")
    assert path.is_file()
    (ax,) = plot_axes(made[0])
    assert ax.get_title() == "training loss: wiki_smt_lr3e-4"  # the run directory's name
    assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel() == "loss (nats/token)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "validation"]
    assert run_logging.plot_loss_curve([{"split": "train", "step": 1, "loss": 1.0}], tmp_path / "x.png",
                                       run_name="named") == tmp_path / "x.png"
    assert plot_axes(made[1])[0].get_title() == "training loss: named"
    assert run_logging.plot_loss_curve([], tmp_path / "none.png") is None


def test_pooling_window_says_what_the_maximum_counts():
    import torch

    from smt.evaluation.pooling_analyzer import AttentionPoolingAnalyzer

    tokens_only = torch.cat([torch.zeros(6, 8), torch.full((6, 64), 1 / 64)], -1)
    fig = AttentionPoolingAnalyzer(8, 64).attention_figure(tokens_only)
    heatmap, bars = plot_axes(fig)
    assert heatmap.get_title() == "attention pooling: 0.0% on memory, entropy 4.16 of at most 4.16 nats (uniform)"
    assert "8 memory slots, never weighed" in heatmap.get_xlabel() and heatmap.get_ylabel()
    assert bars.get_xlabel() and bars.get_ylabel() == "mean weight"
    (colorbar,) = [ax for ax in fig.axes if ax not in (heatmap, bars)]
    assert colorbar.get_ylabel() == "pooling weight"


def test_recall_split_labels_both_axes():
    from smt.evaluation.recall_split import RecallSplit, recall_split_figure

    split = RecallSplit(2, [4, 16])
    split.add([1, 2, 3, 1, 2, 3, 1, 2, 9, 9], [1.0] * 9)
    fig = recall_split_figure({"smt": split.result()})
    (ax,) = plot_axes(fig)
    assert "hit distance" in ax.get_xlabel() and "2-gram" in ax.get_xlabel()
    assert ax.get_ylabel() == "mean NLL (nats)" and ax.get_title() == "loss by n-gram hit distance (n = 2)"


def test_key_pooling_picture_draws_uniform_over_the_visible_positions():
    from smt.evaluation.memory_diagnostics import diagnostics_figures

    key_pooling = {"uniform": 1 / 72, "per_sample": {"distance": [10, 20], "max": [0.2, 0.3], "mean": [0.1, 0.2],
                                                     "other_token_mean": [0.01, 0.02]},
                   "summary": {"uniform_visible": 1 / 64}}
    figures = diagnostics_figures({"model": {"m_input_tokens": 64}, "key_pooling": key_pooling})
    (ax,) = plot_axes(figures["key_pooling_weight.png"])
    (line,) = [line for line in ax.get_lines() if line.get_label().startswith("uniform")]
    assert line.get_ydata()[0] == pytest.approx(1 / 64) and "can weigh" in line.get_label()
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
