"""Symbolic regression in the LLM-SR setting: evolve an equation skeleton whose parameters BFGS fits."""
