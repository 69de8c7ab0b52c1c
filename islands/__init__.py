"""MAP-Elites islands on pyribs archives and the island model around them.

Plain Python (no Ray, no LLM): the engine calls ``Archipelago`` directly, or
through a Ray actor wrapper that holds one.
"""
from islands.archipelago import Archipelago
from islands.island import Elite, Island

__all__ = ["Archipelago", "Elite", "Island"]
