"""A montage of generated Pathfinder images, to compare by eye with the LRA release.

``python -m tasks.pathfinder_montage [path]`` writes ``docs/pathfinder_montage.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tasks.pathfinder_gen import generate


def montage(path: str | Path, n: int = 32, seed: int = 0, *, size: int = 32, contour_length: int = 14,
            cols: int = 8) -> Path:
    """Save ``n`` images of ``generate(n, seed, size=..., contour_length=...)`` in a grid, each
    titled with its label (1: the circles lie on one contour). Uses the Agg canvas directly,
    so no global matplotlib backend is switched."""
    images, labels = generate(n, seed, size=size, contour_length=contour_length, workers=1)
    rows = -(-n // cols)
    fig = Figure(figsize=(1.6 * cols, 1.75 * rows + 0.4))
    FigureCanvasAgg(fig)
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(f"#{i}  label {labels[i]}", fontsize=8)
    fig.suptitle(f"Pathfinder {size}x{size}, contour_length {contour_length}, seed {seed} "
                 "(label 1: both circles on one dashed contour)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


if __name__ == "__main__":
    print(montage(sys.argv[1] if len(sys.argv) > 1 else "docs/pathfinder_montage.png"))
