"""A heatmap of the archipelago's elites with ``ribs.visualize.grid_archive_heatmap``.

Every island's elites are projected onto the first two descriptor axes (one axis
when there is one; numeric axes only) in a fresh pyribs ``GridArchive``, best score
per cell; so runs with any archive kind and any number of axes get the same picture.
Reads only ``elites()`` (plain data), so it works on islands in Ray actors too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ribs.archives import GridArchive

from islands.island import Categorical


def projection(archipelago) -> GridArchive | None:
    """All islands' elites on the first (up to) two numeric axes; None when there are none."""
    axes = [(i, d) for i, d in enumerate(archipelago.descriptors) if not isinstance(d, Categorical)][:2]
    if not axes:
        return None
    # One axis: a second, single-bin axis (the 1-D heatmap of pyribs 0.12 fails on int64 solutions).
    dims = [int(d.bins) for _, d in axes] + [1] * (2 - len(axes))
    ranges = [(d.low, d.high) for _, d in axes] + [(0.0, 1.0)] * (2 - len(axes))
    grid = GridArchive(solution_dim=(), solution_dtype=np.int64, dims=dims, ranges=ranges, seed=0)
    low, high = [r[0] for r in ranges], [r[1] for r in ranges]
    for isl in archipelago.islands:
        for e in isl.elites():
            values = [e.descriptors[i] for i, _ in axes] + [0.5] * (2 - len(axes))
            grid.add_single(solution=e.program_id, objective=e.score, measures=np.clip(values, low, high))
    return grid


def write_heatmap(archipelago, path: str | Path, title: str = "") -> bool:
    """Write the heatmap as a PNG; False (nothing written) when there is no numeric axis."""
    grid = projection(archipelago)
    if grid is None:
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt
    from ribs.visualize import grid_archive_heatmap

    names = [d.name for d in archipelago.descriptors if not isinstance(d, Categorical)][:2]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    try:
        # A few very bad cells would flatten the colour scale: the darkest colour starts at the
        # 10th percentile of the elites' scores (cells below it saturate).
        scores = grid.data("objective")
        vmin = float(np.percentile(scores, 10)) if len(scores) > 1 else None
        grid_archive_heatmap(grid, ax=ax, vmin=vmin, cbar_kwargs={"label": "score"})
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1] if len(names) > 1 else "")
        ax.set_title(title or f"elites of {len(archipelago.islands)} islands ({len(grid)} cells filled)")
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
    return True
