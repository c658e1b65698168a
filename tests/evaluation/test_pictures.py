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
