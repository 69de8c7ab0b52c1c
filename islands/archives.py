"""The one list of island archives: ``--archive`` name -> the island class that hosts it.

Plain strings, imported when an island is built, so reading the names (the run config
does) costs nothing; pyribs (and scikit-learn under it) loads only when a run starts.
"""
from __future__ import annotations

import importlib

ARCHIVES = {
    "grid": "islands.island:Island",  # pyribs GridArchive (CategoricalArchive when every axis is categorical)
    "cvt": "islands.island:Island",  # pyribs CVTArchive
    "clusters": "islands.clusters:ClusterIsland",  # FunSearch-style score clusters, no grid
}


def island_class(archive: str) -> type:
    try:
        module, _, name = ARCHIVES[archive].partition(":")
    except KeyError:
        raise ValueError(f"archive must be one of {', '.join(ARCHIVES)}, got {archive!r}") from None
    return getattr(importlib.import_module(module), name)
