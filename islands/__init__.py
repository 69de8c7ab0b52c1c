"""MAP-Elites islands on pyribs archives and the island model around them.

Plain Python (no Ray, no LLM): the engine calls ``Archipelago`` directly, or
through a Ray actor wrapper that holds one.

- ``island``: ``Island`` (pyribs GridArchive / CVTArchive / CategoricalArchive, program ids as solutions)
- ``clusters``: ``ClusterIsland``, FunSearch-style score clusters without a grid
- ``selection``: parent selection rules (uniform, FunSearch's Boltzmann, DGM, best)
- ``archipelago``: migration (ring, random), FunSearch resets with island epochs, crossover mates, inspirations
- ``visualize``: the archive heatmap every run writes (``ribs.visualize.grid_archive_heatmap``)
"""
from islands.archipelago import Archipelago, new_island
from islands.clusters import ClusterIsland
from islands.island import Categorical, Elite, Island

__all__ = ["Archipelago", "Categorical", "ClusterIsland", "Elite", "Island", "new_island"]
