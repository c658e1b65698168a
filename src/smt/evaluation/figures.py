"""Writing a matplotlib figure to a PNG, the same way for every picture the package draws."""

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
