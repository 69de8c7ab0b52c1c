"""MAP-Elites islands on pyribs archives and the island model around them.

Plain Python (no Ray, no LLM): the engine calls ``Archipelago`` directly, or
through a Ray actor wrapper that holds one.

- ``island``: ``Island`` (pyribs GridArchive / CVTArchive / CategoricalArchive, program ids as solutions)
- ``clusters``: ``ClusterIsland``, FunSearch-style score clusters without a grid
- ``selection``: parent selection rules (uniform, FunSearch's Boltzmann, DGM, best)
- ``archipelago``: migration (ring, random), FunSearch resets with island epochs, crossover mates, inspirations
- ``visualize``: the archive heatmap every run writes (``ribs.visualize.grid_archive_heatmap``)
"""
import importlib

# Imported on first use (PEP 562): ``islands.archives`` and ``islands.selection`` stay light, pyribs loads with
# the first island.
_EXPORTS = {"Archipelago": "islands.archipelago", "new_island": "islands.archipelago",
            "ClusterIsland": "islands.clusters", "Categorical": "islands.island", "Elite": "islands.island",
            "Island": "islands.island"}

__all__ = ["Archipelago", "Categorical", "ClusterIsland", "Elite", "Island", "new_island"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'islands' has no attribute {name!r}")
