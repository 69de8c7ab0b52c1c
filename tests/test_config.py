"""Config: YAML < CLI layering, validation with one-line errors, --help documents every knob."""
import dataclasses

import sys

import pytest

from evosearch.cli import parser
from evosearch.config import ConfigError, RunConfig, load_yaml, make_config


def test_layers_override_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("samples: 7\nislands: 2\nproblem_options: {distribution: or}\n")
    config = make_config(load_yaml(path), {"islands": "3", "sampler": "mutate", "problem": "bin_packing"})
    assert (config.samples, config.islands, config.sampler) == (7, 3, "mutate")
    assert config.problem_options == {"distribution": "or"}


@pytest.mark.parametrize("layer, message", [
    ({"samplez": 3}, "config key 'samplez' is unknown"),
    ({"samples": "many"}, "config 'samples' must be int"),
    ({"samples": 0}, "at least 1"),
    ({"sampler": "gpt"}, "must be one of local, openai, vllm, mutate"),
    ({"probe": "maybe"}, "must be bool"),
    ({"sampler": "openai"}, "needs --base-url and --model"),
    ({"exploit_share": 1.5}, "'exploit_share' must be at most 1"),
])
def test_bad_values_name_the_cause(layer, message):
    with pytest.raises(ConfigError, match=message):
        make_config({"problem": "bin_packing", **layer})


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_yaml(tmp_path / "list.yaml")


def test_help_documents_every_knob():
    run = parser()._subparsers._group_actions[0].choices["run"]
    text = run.format_help()
    for f in dataclasses.fields(RunConfig):
        if f.name != "problem":
            assert "--" + f.name.replace("_", "-") in text


def test_ray_backend_without_ray_is_a_one_line_install_hint(monkeypatch):
    # Ray is an extra (pip install 'evosearch[ray]'): a user without it asks for it by name.
    monkeypatch.setitem(sys.modules, "ray", None)  # what an absent package looks like to find_spec
    with pytest.raises(ConfigError, match=r"^--backend ray needs Ray: pip install 'evosearch\[ray\]'$"):
        make_config({"problem": "bin_packing", "backend": "ray"})
    monkeypatch.delitem(sys.modules, "ray")
    assert make_config({"problem": "bin_packing", "backend": "ray"}).backend == "ray"  # installed here
