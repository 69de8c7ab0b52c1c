"""Edit formats, retries of rejected edits, fix mode, Evolution of Thought and the model bandit,
through the real engine, store and sandboxed evaluator. The LLM is a scripted sampler here
(answers chosen by the test) so that each path is taken for sure; real models are in
tests/test_samplers_llm.py and benchmarks/sampler_throughput.py."""
import asyncio
import json
import sqlite3
import subprocess
import sys

import pytest

from evaluators.evaluator import Evaluator
from evaluators.pool import WorkerPool
from evosearch.config import make_config
from evosearch.engine import Engine
from evosearch.problem import load_problem
from evosearch.samplers.base import Sample, Sampler
from evosearch.store import Store

OPTIONS = {"train_items": 200, "test_items": 300}


class Scripted(Sampler):
    """Answers in order; records the prompts it was given."""
    name = "scripted"

    def __init__(self, answers):
        self.answers, self.prompts = list(answers), []

    async def sample(self, prompt):
        self.prompts.append(prompt)
        return Sample(text=self.answers.pop(0), model="scripted", tokens_in=10, tokens_out=5)


def run(tmp_path, sampler, wrap=lambda evaluator: evaluator, **knobs):
    config = make_config({"problem": "bin_packing", "problem_options": OPTIONS, "workers": 1, "concurrency": 1,
                          "islands": 1, "quiet": True,
                          # tuning trials would take sequence numbers these tests count on
                          "tune_llm": False, **knobs})
    problem = load_problem("bin_packing", None, 0, OPTIONS)
    store = Store(tmp_path / "evosearch.db")

    async def go():
        async with WorkerPool(problem.folder, None, 0, OPTIONS, workers=1, hide=[str(tmp_path)]) as pool:
            engine = Engine(config, problem, store, sampler, wrap(Evaluator(pool, timeout_s=None, memory_mb=None)))
            await engine.run()
            return engine
    return asyncio.run(go()), store


def diff(search, replace, change="square the gap"):
    return f"# Change: {change}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_diff_edit_outside_the_block_is_retried_with_the_reason_then_both_attempts_are_kept(tmp_path):
    outside = diff("import numpy as np", "import numpy as np\nimport os")
    good = diff("    return -(bins - item)", "    return -(bins - item) ** 2")
    missing = diff("    return bins * 3", "    return bins")
    sampler = Scripted([outside, good, missing, missing])
    engine, store = run(tmp_path, sampler, samples=2, edit_formats={"diff": 1.0}, edit_retries=1)
    first, second = store.get(1), store.get(2)
    assert first["status"] == "ok" and first["edit_format"] == "diff" and "** 2" in first["code"]
    assert first["rationale"] == "square the gap" and first["tokens_in"] == 20  # both attempts counted
    (attempt,) = first["attempts"]
    assert attempt["response"] == outside and "outside the EVOLVE-BLOCK regions" in attempt["reason"]
    assert "Your previous answer was:" not in sampler.prompts[0].user
    assert "It was rejected: SEARCH block 1 (lines 2-2) is outside the EVOLVE-BLOCK" in sampler.prompts[1].user
    assert second["status"] == "edit_rejected" and "does not match the program" in second["reason"]
    assert len(second["attempts"]) == 1 and second["response"] == missing


DUPLICATE = diff("    return -(bins - item)", "    return item - bins", "flip the sign")  # the seed's outputs, bit for bit
OTHER = diff("    return -(bins - item)", "    return bins - item", "worst fit")  # other decisions: new outputs


def test_a_functional_duplicate_of_the_parent_is_asked_again_told_why_and_kept_in_attempts(tmp_path):
    sampler = Scripted([DUPLICATE, OTHER])
    engine, store = run(tmp_path, sampler, samples=1, edit_formats={"diff": 1.0}, duplicate_retries=1)
    row = store.get(1)
    assert "return bins - item" in row["code"] and row["duplicate_of"] is None and row["status"] == "ok"
    (attempt,) = row["attempts"]
    assert attempt["response"] == DUPLICATE and attempt["duplicate_of"] == 0
    assert "behaves exactly like the program it was asked to improve" in sampler.prompts[1].user
    assert DUPLICATE.strip() in sampler.prompts[1].user  # the duplicate answer is shown
    assert row["tokens_in"] == 20 and row["response"] == OTHER  # both answers paid for, the last one kept


def test_a_duplicate_of_an_earlier_program_not_the_parent_is_asked_again_hotter(tmp_path):
    new = diff("    return -(bins - item)", "    return -np.abs(bins - 2 * item)", "leave room for one more")
    # Parent is always the seed: sample 2 repeats sample 1's program, which is not its parent.
    sampler = Scripted([OTHER, OTHER, new])
    engine, store = run(tmp_path, sampler, samples=2, edit_formats={"diff": 1.0}, selection="seed",
                        duplicate_retries=1)
    first, second = store.get(1), store.get(2)
    assert first["parents"] == second["parents"] == [0] and first["attempts"] is None
    assert "2 * item" in second["code"] and second["duplicate_of"] is None
    (attempt,) = second["attempts"]
    assert attempt["response"] == OTHER and attempt["duplicate_of"] == 1
    assert "behaves exactly like a program found earlier in this search (program 1" in sampler.prompts[2].user
    # The first ask of each sample at the sampler's temperature, the ask after a duplicate hotter.
    assert [p.temperature_scale for p in sampler.prompts] == [1.0, 1.0, 1.5]


def test_samplers_scale_their_temperature_by_the_prompt():
    from evosearch.samplers.base import Prompt
    from evosearch.samplers.local import LocalSampler
    from evosearch.samplers.openai_api import OpenAISampler
    from evosearch.samplers.vllm_sampler import sampling_params_kwargs

    prompt = Prompt(system="s", user="u", parents=["p"], functions=["f"], seed=3, temperature_scale=1.5)
    openai = OpenAISampler("http://127.0.0.1:9/v1", "m", temperature=0.8)
    assert openai._request(prompt, 1)[0]["temperature"] == pytest.approx(1.2)
    kwargs = sampling_params_kwargs(prompt, n=1, temperature=0.8, top_p=None, answer_tokens=8, mode="chat")
    assert kwargs["temperature"] == pytest.approx(1.2)
    local = LocalSampler.__new__(LocalSampler)  # temperature_for reads only these two fields
    local.temperature, local.temperature_spread = 0.8, 0.0
    assert local.temperature_for(3, prompt.temperature_scale) == pytest.approx(1.2)


def test_by_default_a_duplicate_is_recorded_as_it_is(tmp_path):
    sampler = Scripted([DUPLICATE])
    engine, store = run(tmp_path, sampler, samples=1, edit_formats={"diff": 1.0})
    row = store.get(1)
    assert row["duplicate_of"] == 0 and row["cache_hit"] == "functional" and row["attempts"] is None
    assert len(sampler.prompts) == 1


def test_asked_again_only_once_then_the_duplicate_stands(tmp_path):
    sampler = Scripted([DUPLICATE, DUPLICATE])
    engine, store = run(tmp_path, sampler, samples=1, edit_formats={"diff": 1.0}, duplicate_retries=1)
    row = store.get(1)
    assert row["duplicate_of"] == 0 and len(row["attempts"]) == 1 and len(sampler.prompts) == 2


class Killed(Exception):
    pass


class DiesAfter(Scripted):
    """Answers in order, then the run dies (as a killed driver would, mid-sample)."""

    async def sample(self, prompt):
        if not self.answers:
            self.prompts.append(prompt)
            raise Killed
        return await super().sample(prompt)


def test_a_run_killed_while_asking_again_resumes_with_the_duplicate_shown_and_nothing_lost(tmp_path):
    with pytest.raises(Killed):
        run(tmp_path, DiesAfter([DUPLICATE]), samples=1, edit_formats={"diff": 1.0}, duplicate_retries=1)
    pending = Store(tmp_path / "evosearch.db").get(1)
    assert pending["status"] == "pending" and pending["code"] is None and pending["tokens_in"] == 10
    assert pending["attempts"][0]["duplicate_of"] == 0
    sampler = Scripted([OTHER])
    engine, store = run(tmp_path, sampler, samples=1, edit_formats={"diff": 1.0}, duplicate_retries=1)
    row = store.get(1)
    assert "return bins - item" in row["code"] and row["tokens_in"] == 20 and len(row["attempts"]) == 1
    (prompt,) = sampler.prompts
    assert "behaves exactly like" in prompt.user and DUPLICATE.strip() in prompt.user
    assert store.count("1") == 2  # the seed and this sample: nothing asked twice


class DiesEvaluating:
    """The evaluator of a driver killed after the answer was stored, before its evaluation."""

    def __init__(self, evaluator):
        self.evaluator = evaluator

    def __getattr__(self, name):  # the rest of the evaluator as it is
        return getattr(self.evaluator, name)

    async def evaluate(self, code, key=None):
        if key:
            raise Killed
        return await self.evaluator.evaluate(code, key=key)


def test_after_a_resume_a_duplicate_of_a_program_evaluated_before_is_a_cache_hit_pointing_to_it(tmp_path):
    """The evaluator's caches are restored from the store: what was evaluated before the restart is not
    evaluated again, and a duplicate names the same first program as in a run never stopped."""
    new = diff("    return -(bins - item)", "    return -np.abs(bins - 2 * item)", "leave room for one more")
    run(tmp_path, Scripted([OTHER]), samples=1, edit_formats={"diff": 1.0}, selection="seed",
        duplicate_retries=0)
    counted = []

    def counting(evaluator):
        counted.append(evaluator)
        return evaluator
    engine, store = run(tmp_path, Scripted([OTHER, DUPLICATE, new]), wrap=counting, samples=4,
                        edit_formats={"diff": 1.0}, selection="seed", duplicate_retries=0)
    again, seed_twin, fresh = store.get(2), store.get(3), store.get(4)
    assert (again["cache_hit"], again["duplicate_of"], again["score"]) == ("syntactic", 1, store.get(1)["score"])
    assert (seed_twin["cache_hit"], seed_twin["duplicate_of"]) == ("functional", 0)
    assert fresh["cache_hit"] is None and fresh["duplicate_of"] is None and fresh["status"] == "ok"
    stats = counted[0].stats()
    assert stats["syntactic_hits"] == 1 and stats["functional_hits"] == 1
    assert stats["full_runs"] == 1  # the new program alone, not the seed or sample 1 again


def test_a_run_killed_before_evaluating_a_duplicate_resumes_and_keeps_both_answers_usage(tmp_path):
    with pytest.raises(Killed):
        run(tmp_path, Scripted([DUPLICATE]), wrap=DiesEvaluating, samples=1, edit_formats={"diff": 1.0},
            duplicate_retries=1)
    pending = Store(tmp_path / "evosearch.db").get(1)
    assert pending["status"] == "pending" and pending["code"] is not None and pending["tokens_in"] == 10
    sampler = Scripted([OTHER])
    engine, store = run(tmp_path, sampler, samples=1, edit_formats={"diff": 1.0}, duplicate_retries=1)
    row = store.get(1)
    assert "return bins - item" in row["code"] and row["attempts"][0]["response"] == DUPLICATE
    assert row["tokens_in"] == 20 and row["tokens_out"] == 10  # the answer before the kill is still paid for


def test_fix_mode_repairs_a_failed_program_of_the_island_and_children_see_the_change(tmp_path):
    crash = "def priority(item, bins):\n    # Change: divide by the item\n    raise ValueError('boom')\n"
    repair = "def priority(item, bins):\n    # Change: guard the division\n    return -(bins - item) * 1.5\n"
    sampler = Scripted([crash, repair, repair])
    engine, store = run(tmp_path, sampler, samples=3, edit_formats={"fix": 1.0})
    rows = [store.get(i) for i in (1, 2, 3)]
    assert rows[0]["edit_format"] == "full" and rows[0]["status"] == "crash"  # nothing to fix yet
    assert rows[1]["edit_format"] == "fix" and rows[1]["parents"] == [1] and rows[1]["status"] == "ok"
    fix_prompt = sampler.prompts[1]
    assert fix_prompt.parents == [rows[0]["code"]] and "boom" in fix_prompt.user and "failed: crash" in fix_prompt.user
    assert "boom" in fix_prompt.completion and fix_prompt.completion.endswith(fix_prompt.header)
    shown = engine.planner.shown(2)  # what a child's prompt says about program 2: its change and its outcome
    assert shown.change == "guard the division" and shown.delta is None  # its parent failed: no score to beat
    seed_child = engine.planner.shown(1)
    assert seed_child.change == "divide by the item" and seed_child.error and "boom" in seed_child.error


def test_every_sample_of_a_crossover_prompt_is_told_its_format_the_shared_ones_too(tmp_path):
    # The second sample of each prompt is rebuilt from the store (as after a restart): it must still
    # say "crossover", or an LLM-free sampler would answer it with a plain mutation.
    answers = [f"def priority(item, bins):\n    return {body}\n" for body in (
        "bins - item", "-np.arange(len(bins))", "np.arange(len(bins))", "-np.abs(bins - 2 * item)", "bins", "-bins")]
    sampler = Scripted(answers)
    engine, store = run(tmp_path, sampler, samples=6, edit_formats={"crossover": 1.0}, samples_per_prompt=2)
    assert [p.edit_format for p in sampler.prompts] == ["crossover"] * 6
    assert [store.get(i)["edit_format"] for i in range(1, 7)] == ["crossover"] * 6
    assert {len(store.get(i)["parents"]) for i in range(1, 7)} == {1, 2}  # a mate from another cell, once there is one


def test_a_sampler_is_asked_its_own_mix_of_formats_unless_the_run_sets_one(tmp_path):
    class Mixing(Scripted):
        edit_formats = ("full", "crossover")
        edit_mix = {"full": 0.5, "crossover": 0.5}

    answer = "def priority(item, bins):\n    return -(bins - item) * {}\n"
    own = Mixing([answer.format(k) for k in range(2, 22)])
    (tmp_path / "own").mkdir()
    (tmp_path / "told").mkdir()
    run(tmp_path / "own", own, samples=20)
    asked = [p.edit_format for p in own.prompts]
    assert set(asked) == {"full", "crossover"}, asked
    told = Mixing([answer.format(k) for k in range(2, 22)])
    run(tmp_path / "told", told, samples=20, edit_formats={"full": 1.0})
    assert {p.edit_format for p in told.prompts} == {"full"}


def test_insights_are_made_every_interval_and_shown_in_later_prompts(tmp_path):
    full = "def priority(item, bins):\n    # Change: scale\n    return -(bins - item) * {}\n"
    insight = "Lessons:\n- Scaling the gap changes nothing.\n- Try a threshold on small gaps."
    crash = "def priority(item, bins):\n    raise ValueError('boom')\n"
    sampler = Scripted([crash, insight, full.format(3), full.format(4)])
    engine, store = run(tmp_path, sampler, samples=3, insights_interval=2)
    assert store.insights(10) == (2, "Scaling the gap changes nothing.\nTry a threshold on small gaps.")
    request = sampler.prompts[1]
    assert "- 1 of 1 recent samples failed with crash: " in request.user and "boom" in request.user
    assert "Insights from earlier samples" not in sampler.prompts[2].user  # made at 2: seen from 2 + concurrency on
    assert "- Try a threshold on small gaps." in sampler.prompts[3].user
    assert "# Insight: Try a threshold on small gaps." in sampler.prompts[3].completion


def test_several_samples_per_prompt_share_prompt_and_parents_with_their_own_seeds(tmp_path):
    from evosearch.samplers.mutate import MutateSampler
    engine, store = run(tmp_path, MutateSampler(), samples=7, samples_per_prompt=3, islands=2, inspirations=1,
                        parents=1)
    got = [store.get(i) for i in range(1, 8)]
    groups = [got[0:3], got[3:6], got[6:7]]
    for group in groups:
        assert len({(r["prompt_id"], r["island"], tuple(r["parents"])) for r in group}) == 1
    assert len({g[0]["prompt_id"] for g in groups}) == 3 and [g[0]["island"] for g in groups] == [0, 1, 0]
    assert len({r["code"] for r in got[0:3]}) == 3  # one prompt, three different answers
    # Inspirations (other elites of the island) appear once the island holds more than the parents.
    users = [store.prompt(g[0]["prompt_id"])[1] for g in groups]
    assert "for inspiration" not in users[0] and "for inspiration" in users[2]


def rows(run_dir):
    db = sqlite3.connect(run_dir / "evosearch.db")
    try:
        return db.execute("SELECT id, status, score, code, parents, sampler FROM programs ORDER BY id").fetchall()
    finally:
        db.close()


def cli(*args):
    proc = subprocess.run([sys.executable, "-m", "evosearch", "run", *args], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


ARMS = "{strong: {sampler: mutate}, weak: {sampler: mutate, max_operators: 1, cost: 3}}"
BANDIT = ["bin_packing", "--models", ARMS, "--seed", "1", "--workers", "2", "--quiet", "--insights-interval", "5",
          "--problem-options", "{train_items: 200, test_items: 300}"]


def test_bandit_over_two_mutate_arms_is_repeatable_and_resumes_to_the_same_run(tmp_path):
    # Insights on too: with mutate arms they are the LLM-free digest, so the run stays repeatable.
    out = cli(*BANDIT, "--samples", "30", "--out", str(tmp_path / "a")).stdout
    cli(*BANDIT, "--samples", "12", "--out", str(tmp_path / "b"))
    cli("--resume", str(tmp_path / "b"), "--samples", "30", "--quiet")  # the bandit's state comes from the store
    a = rows(tmp_path / "a")
    assert len(a) == 31 and rows(tmp_path / "b") == a
    # The evaluator's counters in the summary cover both sessions: 30 samples and the seed, not the last 18.
    counters = json.loads((tmp_path / "b" / "summary.json").read_text())["evaluator"]
    assert counters["evaluations"] == 31
    arms = [r[5] for r in a[1:]]
    assert set(arms) == {"strong", "weak"}
    assert arms.count("strong") > arms.count("weak")  # the dear arm must earn its cost
    db = sqlite3.connect(tmp_path / "a" / "evosearch.db")
    made = db.execute("SELECT at_sample, model FROM insights ORDER BY at_sample").fetchall()
    db.close()
    assert made and all(model == "digest" for _, model in made)
    # The summary says which arm found what: rows, valid ones and new bests (mutate commits in id order).
    tally, best = {}, a[0][2]
    for _, status, score, _, _, sampler in a[1:]:
        t = tally.setdefault(sampler, {"rows": 0, "ok": 0, "new_bests": 0})
        t["rows"] += 1
        t["ok"] += status == "ok"
        t["new_bests"] += status == "ok" and score > best
        best = max(best, score) if status == "ok" else best
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["samplers"] == tally
    assert summary["best"]["sampler"] == next(r[5] for r in a if r[0] == summary["best"]["id"])
    assert f"strong {tally['strong']['rows']} ({tally['strong']['ok']} valid, " in out


@pytest.mark.slow
def test_the_embedded_model_and_mutate_share_a_run(tmp_path):
    # The real embedded model (llama.cpp) beside mutate: the bandit tries each arm, then mostly picks
    # the cheap one, and the summary says which sampler wrote what.
    out = cli("bin_packing", "--sampler", "local+mutate", "--samples", "12", "--seed", "0", "--quiet",
              "--problem-options", "{train_items: 200, test_items: 300}", "--out", str(tmp_path / "r")).stdout
    got = rows(tmp_path / "r")
    arms = [r[5] for r in got[1:] if r[5] != "tune"]
    assert len(arms) == 12 and set(arms) == {"local", "mutate"} and arms.count("mutate") > arms.count("local")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert {"local", "mutate"} <= set(summary["samplers"])
    assert summary["samplers"]["local"]["rows"] == arms.count("local")
    db = sqlite3.connect(tmp_path / "r" / "evosearch.db")
    tokens = dict(db.execute("SELECT sampler, SUM(tokens_out) FROM programs GROUP BY sampler").fetchall())
    db.close()
    assert tokens["local"] > 0  # the model really answered
    assert "by sampler: " in out and f"local {arms.count('local')} (" in out


def test_a_plus_b_sampler_is_a_bandit_at_each_samplers_cost():
    from evosearch.backend import build_sampler
    from evosearch.config import ConfigError
    from evosearch.samplers.bandit import BanditSampler

    config = make_config({"problem": "bin_packing", "sampler": "local+mutate"})
    assert config.arms() == {"local": {"sampler": "local", "cost": 1.0}, "mutate": {"sampler": "mutate", "cost": 0.1}}
    sampler = build_sampler(config)  # the model loads only when first asked
    assert isinstance(sampler, BanditSampler) and sampler.costs == {"local": 10.0, "mutate": 1.0}
    assert [type(s).__name__ for s in sampler.arms.values()] == ["LocalSampler", "MutateSampler"]
    assert make_config({"problem": "p", "sampler": "mutate"}).arms() == {}
    for settings, error in [({"sampler": "local+local"}, "^config 'sampler': 'local\\+local' names a sampler twice$"),
                            ({"sampler": "gpt+mutate"}, "^config 'sampler' must be one of .*, got 'gpt' in "
                                                        "'gpt\\+mutate'$"),
                            ({"sampler": "local+mutate", "models": {"a": {"sampler": "mutate"}}},
                             "^give several samplers either as --sampler A\\+B or as --models, not both$"),
                            ({"sampler": "openai+mutate"}, "^--sampler openai needs --base-url and --model$"),
                            ({"sampler": "local+mutate", "max_tokens": 100},
                             "^--max-cost and --max-tokens do not work with several samplers")]:
        with pytest.raises(ConfigError, match=error):
            make_config({"problem": "p", **settings})


def test_bad_models_and_formats_are_one_line_errors():
    from evosearch.config import ConfigError
    with pytest.raises(ConfigError, match="^config 'models': 'x' needs a mapping with sampler"):
        make_config({"problem": "p", "models": {"x": {"sampler": "gpt"}}})
    with pytest.raises(ConfigError, match="^config 'edit_formats': unknown format 'patch'"):
        make_config({"problem": "p", "edit_formats": {"patch": 1}})
