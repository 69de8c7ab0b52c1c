"""Distances and a reader for TSPLIB's symmetric coordinate instances.

TSPLIB (Reinelt 1991) rounds Euclidean distances to integers: EUC_2D is
``nint(sqrt(dx^2 + dy^2))`` with ``nint(x) = int(x + 0.5)``, CEIL_2D rounds up.
The published optimal lengths hold under that rounding only, so every tour
length here goes through :func:`distance_matrix`.
Only the NODE_COORD_SECTION format is read (all of ../shared/data/tsp/tsplib95
is EUC_2D); the ``tsplib95`` package would add networkx for this one section.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# "euclidean" is the unrounded metric of the generated instances.
METRICS = ("euclidean", "EUC_2D", "CEIL_2D")


def _round(raw: np.ndarray, metric: str) -> np.ndarray:
    if metric == "EUC_2D":
        return np.floor(raw + 0.5)  # TSPLIB's nint; np.round would round halves to even
    if metric == "CEIL_2D":
        return np.ceil(raw)
    if metric == "euclidean":
        return raw
    raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")


def distance_matrix(coords, metric: str) -> np.ndarray:
    """The n x n distance matrix of points ``coords`` (n x 2) under ``metric``."""
    xy = np.asarray(coords, dtype=float)
    return _round(np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)), metric)


def read_tsp(path: str | Path) -> dict:
    """One ``.tsp`` file -> ``{"name", "coords", "metric"}``; ValueError names what is unsupported."""
    path = Path(path)
    header: dict[str, str] = {}
    coords: list[list[float]] = []
    lines = iter(path.read_text().splitlines())
    for line in lines:
        if line.strip().startswith("NODE_COORD_SECTION"):
            break
        if ":" in line:
            key, value = line.split(":", 1)
            header[key.strip()] = value.strip()
    else:
        raise ValueError(f"{path.name}: no NODE_COORD_SECTION (only coordinate instances are supported)")
    if header.get("TYPE", "TSP") != "TSP":
        raise ValueError(f"{path.name}: TYPE {header['TYPE']} is not a symmetric TSP")
    metric = header.get("EDGE_WEIGHT_TYPE", "")
    if metric not in ("EUC_2D", "CEIL_2D"):
        raise ValueError(f"{path.name}: EDGE_WEIGHT_TYPE {metric or '(missing)'} is not supported (EUC_2D, CEIL_2D)")
    for line in lines:
        fields = line.split()
        if not fields or fields[0] == "EOF":
            break
        coords.append([float(fields[1]), float(fields[2])])
    dimension = int(header.get("DIMENSION", len(coords)))
    if len(coords) != dimension:
        raise ValueError(f"{path.name}: DIMENSION {dimension} but {len(coords)} coordinates")
    return {"name": header.get("NAME", path.stem), "coords": coords, "metric": metric}


def read_best_solutions(path: str | Path) -> dict[str, int]:
    """``bestSolutions.txt`` ("name : length" lines) -> optimal tour length by instance name."""
    best = {}
    for line in Path(path).read_text().splitlines():
        if ":" in line:
            name, value = line.split(":", 1)
            best[name.strip()] = int(value.split()[0])
    return best


def load_tsplib(folder: str | Path, names: list[str] | None = None) -> dict[str, dict]:
    """Instances of ``folder`` (``*.tsp`` plus ``bestSolutions.txt``) with their optimum,
    sorted by size; ``names`` restricts them. Each is ``{"coords", "metric", "reference",
    "reference_kind": "optimum"}``."""
    folder = Path(folder)
    best = read_best_solutions(folder / "bestSolutions.txt")
    wanted = names if names is not None else sorted(p.stem for p in folder.glob("*.tsp"))
    found = {}
    for name in wanted:
        if not (folder / f"{name}.tsp").is_file():
            raise ValueError(f"no TSPLIB instance {name}.tsp in {folder}")
        if name not in best:
            raise ValueError(f"no optimal length for {name} in {folder / 'bestSolutions.txt'}")
        inst = read_tsp(folder / f"{name}.tsp")
        found[name] = {"coords": inst["coords"], "metric": inst["metric"], "reference": float(best[name]),
                       "reference_kind": "optimum"}
    return dict(sorted(found.items(), key=lambda kv: (len(kv[1]["coords"]), kv[0])))
