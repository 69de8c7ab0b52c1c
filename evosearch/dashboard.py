"""A live local web page over run folders: the report's views, refreshed as runs go, plus run comparison.

The standard library's ThreadingHTTPServer serves one page (the report's script in live mode) and a small JSON API;
the stores are only read (read-only SQLite connections; WAL lets them read while the run writes). Binds to
127.0.0.1 unless told otherwise: the pages hold prompts, answers and code.

  GET /                     the page            GET /api/runs      run folders: name, samples, best, stamp
  GET /plotly.min.js        plotly.js           GET /api/compare   best score over samples of every run
  GET /api/run?name=NAME    one run as report.load_run() makes it (rebuilt only when its store changed)
"""
from __future__ import annotations

import gzip
import json
import sqlite3
import threading
import time
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from .report import ReportError, connect, load_run, page

DB = "evosearch.db"


def run_dirs(root: Path) -> list[Path]:
    """ROOT itself when it is a run folder, else the run folders directly inside it (oldest first)."""
    if (root / DB).is_file():
        return [root]
    found = [p for p in root.iterdir() if (p / DB).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: ((p / DB).stat().st_mtime, p.name))


def stamp(run_dir: Path) -> str:
    """Changes whenever the store does (the WAL file grows with every commit)."""
    parts = []
    for name in (DB, DB + "-wal", "summary.json", "qd_metrics.json"):
        try:
            st = (run_dir / name).stat()
            parts.append(f"{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            parts.append("-")
    return "/".join(parts)


class Dashboard:
    """The state behind the server: the runs folder and a cache of built views, keyed by each store's stamp."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._cache: dict[tuple[str, str], tuple[str, object, float]] = {}  # stamp, view, not rebuilt before
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _cached(self, kind: str, run_dir: Path, build):
        """The view as of the store's current stamp; while a run goes, rebuilt at most every 2x its build time
        (a 10,000-sample run takes seconds), so the dashboard never takes more than a third of a core from it."""
        key, now = (kind, str(run_dir)), stamp(run_dir)
        with self._guard:
            lock = self._locks.setdefault(str(run_dir) + kind, threading.Lock())
        with lock:  # one build per run at a time; later callers get its result
            hit = self._cache.get(key)
            if hit and (hit[0] == now or time.monotonic() < hit[2]):
                return hit[1]
            started = time.monotonic()
            value = build(run_dir)
            done = time.monotonic()
            self._cache[key] = (now, value, done + 2 * (done - started))
            return value

    def find(self, name: str) -> Path | None:
        return next((p for p in run_dirs(self.root) if p.name == name), None)

    def runs(self) -> list[dict]:
        out = []
        for p in run_dirs(self.root):
            try:
                out.append({"name": p.name, "stamp": stamp(p), **self._cached("head", p, _head)})
            except (sqlite3.Error, ReportError) as e:  # a store being created, or not a store: listed, not fatal
                out.append({"name": p.name, "stamp": stamp(p), "samples": 0, "best": None, "error": str(e)})
        return out

    def compare(self) -> list[dict]:
        curves = []
        for p in run_dirs(self.root):
            try:
                curves.append({"name": p.name, **self._cached("curve", p, _curve)})
            except (sqlite3.Error, ReportError):
                continue
        return curves

    def run(self, name: str) -> bytes | None:
        """One run's data as gzipped JSON (what the report embeds), or None for an unknown name."""
        p = self.find(name)
        if p is None:
            return None
        return self._cached("run", p, _run_json)


def _run_json(run_dir: Path) -> bytes:
    before = stamp(run_dir)  # the page refetches until it has data at least as new as the store's stamp
    data = load_run(run_dir)
    data["run"]["stamp"] = before
    return gzip.compress(json.dumps(data, separators=(",", ":"), allow_nan=False).encode(), 5)


def _head(run_dir: Path) -> dict:
    db = connect(run_dir / DB)
    try:
        n, best = db.execute("SELECT COUNT(*), MAX(CASE WHEN status = 'ok' THEN score END) FROM programs").fetchone()
        problem = db.execute("SELECT json_extract(value, '$.problem') FROM meta WHERE key = 'config'").fetchone()
    finally:
        db.close()
    return {"samples": max(0, n - 1), "best": best, "problem": problem[0] if problem else None}


def _curve(run_dir: Path) -> dict:
    """Best score over samples: the improvements and the last sample."""
    db = connect(run_dir / DB)
    try:
        rows = db.execute("SELECT id, status, score FROM programs ORDER BY id").fetchall()
    finally:
        db.close()
    x, y, best = [], [], None
    for pid, status, score in rows:
        if status == "ok" and score is not None and (best is None or score > best):
            best = score
            x.append(pid)
            y.append(score)
    if rows and x and rows[-1][0] > x[-1]:
        x.append(rows[-1][0])
        y.append(best)
    return {"x": x, "y": y}


class Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard  # set on the class made by serve()
    protocol_version = "HTTP/1.1"

    @cached_property
    def _page(self) -> bytes:
        return page("", live=True).encode()

    def log_message(self, format, *args) -> None:  # quiet: a browser polls every few seconds
        pass

    def _send(self, body: bytes, kind: str, *, gzipped: bool = False, cache: bool = False) -> None:
        if gzipped and "gzip" not in self.headers.get("Accept-Encoding", ""):
            body, gzipped = gzip.decompress(body), False
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=86400" if cache else "no-store")
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj) -> None:
        self._send(json.dumps(obj, separators=(",", ":"), allow_nan=False).encode(), "application/json")

    def do_GET(self) -> None:
        url = urlparse(self.path)
        try:
            if url.path in ("/", "/index.html"):
                self._send(self._page, "text/html; charset=utf-8")
            elif url.path == "/plotly.min.js":
                self._send(_plotly_gz(), "text/javascript", gzipped=True, cache=True)
            elif url.path == "/api/runs":
                self._json(self.dashboard.runs())
            elif url.path == "/api/compare":
                self._json(self.dashboard.compare())
            elif url.path == "/api/run":
                body = self.dashboard.run(parse_qs(url.query).get("name", [""])[0])
                if body is None:
                    self.send_error(404, "no such run")
                else:
                    self._send(body, "application/json", gzipped=True)
            else:
                self.send_error(404)
        except (sqlite3.Error, ReportError) as e:
            self.send_error(503, f"store not readable now: {e}")
        except (BrokenPipeError, ConnectionResetError):
            pass


_PLOTLY_GZ: bytes | None = None


def _plotly_gz() -> bytes:
    global _PLOTLY_GZ
    if _PLOTLY_GZ is None:
        from plotly.offline import get_plotlyjs
        _PLOTLY_GZ = gzip.compress(get_plotlyjs().encode(), 6)
    return _PLOTLY_GZ


def serve(root: str | Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A server for the runs under ``root`` (call serve_forever(), or run it in a thread); port 0 picks a free one."""
    handler = type("DashboardHandler", (Handler,), {"dashboard": Dashboard(root)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
