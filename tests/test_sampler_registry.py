"""The sampler registry: one list of names, plus samplers installed through the
``evosearch.samplers`` entry point group (a distribution on sys.path, as pip would leave it)."""
import os
import sqlite3
import subprocess
import sys

import pytest

from evosearch.config import ConfigError, make_config
from evosearch.samplers import REGISTRY, make_sampler, sampler_class, sampler_names
from evosearch.samplers.base import Sampler

TINY = '''
from evosearch.samplers.base import Sample, Sampler


class Doubler(Sampler):
    """Scales the best parent's priority: one file is a whole sampler."""
    name = "doubler"
    llm = False
    edit_formats = ("full",)

    @classmethod
    def from_config(cls, config, **options):
        return cls(factor=config.temperature + 1, **options)

    def __init__(self, factor=2.0):
        self.factor = factor

    async def sample(self, prompt):
        return Sample(text="def priority(item, bins):\\n    return -(bins - item) * %r\\n" % (self.factor + prompt.seed % 7),
                      model="doubler")
'''


def test_built_in_names_come_from_the_one_registry():
    assert sampler_names()[:4] == tuple(REGISTRY) == ("local", "openai", "vllm", "mutate")
    assert all(issubclass(sampler_class(n), Sampler) for n in ("mutate", "openai"))
    assert make_sampler("mutate").llm is False and make_sampler("mutate").edit_formats == ("full", "crossover")
    with pytest.raises(ValueError, match="unknown sampler 'gpt5'"):
        make_sampler("gpt5")
    with pytest.raises(ConfigError, match="config 'sampler' must be one of local, openai, vllm, mutate"):
        make_config({"problem": "bin_packing", "sampler": "gpt5"})


def test_a_sampler_installed_through_an_entry_point_runs_a_search(tmp_path):
    (tmp_path / "tiny_sampler.py").write_text(TINY)
    dist = tmp_path / "tiny_sampler-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-sampler\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[evosearch.samplers]\ndoubler = tiny_sampler:Doubler\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "evosearch", "run", "bin_packing", "--sampler", "doubler",
                           "--samples", "6", "--temperature", "2", "--workers", "1", "--quiet", "--out", str(out),
                           "--problem-options", "{train_items: 200, test_items: 300}"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with sqlite3.connect(out / "evosearch.db") as db:
        rows = db.execute("SELECT sampler, model, status, code FROM programs WHERE id > 0 ORDER BY id").fetchall()
    assert len(rows) == 6 and {r[:3] for r in rows} == {("doubler", "doubler", "ok")}
    assert "* 3.0" in rows[0][3] or any(f"* {3.0 + k}" in rows[0][3] for k in range(7))  # from_config read the run
