"""evosearch: LLM-guided evolutionary program search (see README.md; the Python API is evosearch/api.py).

``import evosearch`` is cheap: the API's names load on first use."""
from __future__ import annotations

__all__ = ["search", "search_async", "open_run", "SearchResult", "__version__"]


def __getattr__(name: str):
    if name in ("search", "search_async", "open_run", "SearchResult"):
        from . import api

        return getattr(api, name)
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("evosearch")
        except PackageNotFoundError:  # a source checkout that was never installed
            return "0+unknown"
    raise AttributeError(f"module 'evosearch' has no attribute {name!r}")
