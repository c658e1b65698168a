"""Writing a matplotlib figure to a PNG, the same way for every picture the package draws, and
the colour of a label written on a coloured cell."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out `fig`, write it to `path` (parents created) and close it; returns the path."""
    import matplotlib.pyplot as plt

    if fig.get_layout_engine() is None:  # figures made with layout="constrained" lay themselves out
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def text_color_on(cmap, norm, value: float) -> str:
    """'white' on a dark cell, 'black' on a light one: the cell's colour is cmap(norm(value)), dark
    when its relative luminance (0.2126 R + 0.7152 G + 0.0722 B, sRGB linearised) is under 0.179, the
    luminance whose contrast with white equals its contrast with black. A missing value: black."""
    import math

    if value is None or not math.isfinite(value):
        return "black"
    red, green, blue, _ = cmap(norm(value))

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    luminance = 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)
    return "white" if luminance < 0.179 else "black"
