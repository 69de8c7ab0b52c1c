"""The OpenAI-compatible sampler against a misbehaving server of our own (429, 500, slow,
garbage, empty answers) on loopback, and the run budget."""
import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from evosearch.samplers.base import Prompt, SamplerError
from evosearch.samplers.budget import (FREE, PRICES, Budget, BudgetExhausted, Price, find_price, parse_prices,
                                       worst_prompt_tokens)
from evosearch.samplers.openai_api import OpenAISampler
from test_samplers_llm import server  # noqa: F401  (the real llama.cpp server fixture)

USAGE = {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
CODE = "```python\ndef priority_v2(item, bins):\n    return -(bins - item) + 0.5 * (bins == bins.max())\n```"


class Misbehaving(ThreadingHTTPServer):
    """An OpenAI-compatible server that follows a script per route: ``/<route>/v1/...`` answers
    the route's next scripted act, then "ok" once the script is used up."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.scripts: dict[str, list] = {}
        self.requests: dict[str, list[dict]] = {}
        self.lock = threading.Lock()
        self.active: dict[str, int] = {}
        self.most_active: dict[str, int] = {}  # most requests of a route served at once

    def route(self, name: str, *acts) -> str:
        self.scripts[name] = list(acts)
        self.requests[name] = []
        self.active[name] = self.most_active[name] = 0
        return f"http://127.0.0.1:{self.server_address[1]}/{name}/v1"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def do_GET(self):
        self._send(200, json.dumps({"object": "list", "data": [{"id": "fake", "object": "model", "created": 0,
                                                                 "owned_by": "test"}]}).encode())

    def do_POST(self):
        owner: Misbehaving = self.server
        name = self.path.strip("/").split("/")[0]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with owner.lock:
            owner.requests[name].append(body)
            act = owner.scripts[name].pop(0) if owner.scripts[name] else "ok"
            owner.active[name] += 1
            owner.most_active[name] = max(owner.most_active[name], owner.active[name])
        try:
            self._act(act, body)
        finally:
            with owner.lock:
                owner.active[name] -= 1

    def _act(self, act, body):
        if act == 429:
            return self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0.05"})
        if act == 500:
            return self._send(500, b'{"error": {"message": "boom"}}', {"retry-after-ms": "10"})
        if isinstance(act, tuple) and act[0] == "slow":
            time.sleep(act[1])
            act = "ok"
        if act == "garbage":
            return self._send(200, b'{"choices": [ this is not json')
        n = body.get("n", 1) if act == "ok" else 0  # "empty": no choices, usage still reported
        if "messages" in body:
            choices = [{"index": i, "message": {"role": "assistant", "content": f"answer {i}\n{CODE}"},
                        "finish_reason": "stop"} for i in range(n)]
            kind = "chat.completion"
        else:
            choices = [{"index": i, "text": "    return -bins\n", "finish_reason": "stop", "logprobs": None}
                       for i in range(n)]
            kind = "text_completion"
        self._send(200, json.dumps({"id": "x", "object": kind, "created": 0, "model": body["model"],
                                    "choices": choices, "usage": USAGE}).encode())


@pytest.fixture(scope="module")
def fake():
    misbehaving = Misbehaving()
    thread = threading.Thread(target=misbehaving.serve_forever, daemon=True)
    thread.start()
    yield misbehaving
    misbehaving.shutdown()
    misbehaving.server_close()


def prompt(seed=0, user="Improve priority."):
    return Prompt("You improve heuristics.", user, parents=[], functions=["priority"], seed=seed)


def sample(sampler, p=None):
    async def go():
        try:
            return await sampler.sample(p or prompt())
        finally:
            await sampler.close()
    return asyncio.run(go())


# --- retries, timeouts, bad answers --------------------------------------------------

def test_429_is_retried_after_retry_after_and_logged(fake, caplog):
    url = fake.route("r429", 429, 429)
    sampler = OpenAISampler(url, model="fake", max_retries=3)
    with caplog.at_level(logging.WARNING, logger="evosearch.samplers.openai_api"):
        s = sample(sampler)
    assert s.text.startswith("answer 0") and s.tokens_in == 30 and s.tokens_out == 12
    assert s.extra["retries"] == 2 and s.extra["attempts"] == ["HTTP 429", "HTTP 429"]
    assert len(fake.requests["r429"]) == 3
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and all("after HTTP 429" in m for m in retries)
    assert sampler.usage()["retries"] == 2 and sampler.usage()["http_429"] == 2


def test_persistent_500_fails_with_every_attempt_in_the_reason(fake):
    url = fake.route("r500", 500, 500, 500, 500)
    sampler = OpenAISampler(url, model="fake", max_retries=2)
    with pytest.raises(SamplerError) as info:
        sample(sampler)
    assert str(info.value) == f"{url}: HTTP 500: boom (3 attempts: HTTP 500, HTTP 500, HTTP 500)"
    assert len(fake.requests["r500"]) == 3
    u = sampler.usage()
    assert u["failures"] == 1 and u["retries"] == 2 and u["tokens_in"] == 0 and sampler.budget.in_flight == 0


def test_500_then_ok_recovers(fake):
    sampler = OpenAISampler(fake.route("r500ok", 500), model="fake", max_retries=2)
    s = sample(sampler)
    assert s.extra["retries"] == 1 and s.extra["attempts"] == ["HTTP 500"]


def test_slow_answer_times_out_per_attempt_and_is_retried(fake):
    url = fake.route("slow", ("slow", 2.0), ("slow", 2.0))
    sampler = OpenAISampler(url, model="fake", timeout_s=0.3, max_retries=1)
    with pytest.raises(SamplerError) as info:
        sample(sampler)
    assert str(info.value) == f"{url}: no answer within 0.3s (2 attempts: no answer, no answer)"
    assert sampler.usage()["retries"] == 1 and sampler.budget.in_flight == 0
    assert sample(sampler).text.startswith("answer 0")  # the next request is served


def test_garbage_json_is_a_recorded_failure_not_a_crash(fake):
    url = fake.route("garbage", "garbage")
    sampler = OpenAISampler(url, model="fake")
    with pytest.raises(SamplerError, match=f"^{url}: bad answer: ") as info:
        sample(sampler)
    assert "\n" not in str(info.value) and len(fake.requests["garbage"]) == 1  # a 200 is not retried
    assert sampler.usage()["failures"] == 1 and sampler.budget.in_flight == 0


def test_empty_choices_fail_but_their_tokens_are_charged(fake):
    url = fake.route("empty", "empty")
    sampler = OpenAISampler(url, model="fake", prices={"fake": [1, 2]})
    with pytest.raises(SamplerError, match=f"^{url}: the answer has no choices$"):
        sample(sampler)
    u = sampler.usage()
    assert (u["tokens_in"], u["tokens_out"], u["failures"]) == (30, 12, 1)
    assert u["cost"] == pytest.approx((30 * 1 + 12 * 2) / 1e6)


def test_concurrency_limit_holds(fake):
    url = fake.route("gate", *[("slow", 0.2)] * 6)
    sampler = OpenAISampler(url, model="fake", concurrency=2)

    async def go():
        out = await asyncio.gather(*(sampler.sample(prompt(i, user=f"p{i}")) for i in range(6)))
        await sampler.close()
        return out
    out = asyncio.run(go())
    assert len(out) == 6 and len(fake.requests["gate"]) == 6
    assert fake.most_active["gate"] <= 2


def test_n_answers_per_request_are_handed_out_one_per_sample(fake):
    url = fake.route("n3")
    sampler = OpenAISampler(url, model="fake", n=3, prices={"fake": [1, 1]})

    async def go():
        same = [await sampler.sample(prompt(s)) for s in range(4)]  # same text, different seeds
        other = await sampler.sample(prompt(0, user="another prompt"))
        await sampler.close()
        return same, other
    same, other = asyncio.run(go())
    bodies = fake.requests["n3"]
    assert len(bodies) == 3 and all(b["n"] == 3 for b in bodies)  # 3 answers, then 1 more request, then other
    assert [s.text.split("\n")[0] for s in same] == ["answer 0", "answer 1", "answer 2", "answer 0"]
    assert [s.tokens_in for s in same] == [30, 0, 0, 30]  # the first answer carries the request's usage
    assert sum(s.extra["cost"] for s in same[:3]) == pytest.approx(42 / 1e6)
    assert sampler.n_honoured is True and sampler.usage()["spare_used"] == 2
    assert other.text.startswith("answer 0")


def test_completion_mode_and_top_p_reach_the_server(fake):
    url = fake.route("complete")
    header = "def priority_v1(item, bins):\n"
    sampler = OpenAISampler(url, model="fake", mode="completion", answer_tokens=64, top_p=0.9)
    s = sample(sampler, Prompt("", "", [], ["priority"], 5, completion="# code\n" + header, header=header))
    assert s.text == header + "    return -bins\n" and s.extra["mode"] == "completion"
    (body,) = fake.requests["complete"]
    assert body["max_tokens"] == 64 and body["top_p"] == 0.9 and body["seed"] == 5 and len(body["stop"]) == 4


# --- the run budget -----------------------------------------------------------------

def test_prices():
    assert find_price("gpt-4o-mini-2024-07-18") == PRICES["gpt-4o-mini"]  # longest prefix, not gpt-4o
    assert find_price("gpt-4o") == Price(2.5, 10.0)
    assert find_price("my-model") is None and find_price("my-model", local=True) == FREE
    assert find_price("my-model", parse_prices({"my-model": [1, 3]}), local=True) == Price(1, 3)
    assert parse_prices({"m": {"input": 0.5, "output": 1}}) == {"m": Price(0.5, 1.0)}
    with pytest.raises(ValueError, match=r"^price of 'm' must be \[input, output\]"):
        parse_prices({"m": [1]})
    with pytest.raises(ValueError, match="^no price known for model 'mystery'"):
        OpenAISampler("https://api.example.com/v1", model="mystery", max_cost=1.0)
    assert OpenAISampler("http://127.0.0.1:1/v1", model="mystery", max_cost=1.0).meter.price == FREE
    assert worst_prompt_tokens("héllo") == 6 + 16 + 16


def test_budget_waits_for_requests_in_flight_then_refuses():
    async def go():
        budget = Budget(max_tokens=100)
        a = await budget.reserve(60, 0.0)
        waiting = asyncio.create_task(budget.reserve(60, 0.0))  # 120 > 100: waits for a
        await asyncio.sleep(0.01)
        assert not waiting.done()
        budget.settle(a, 10, 5, 0.0)  # a used 15: 15 + 60 fits
        b = await waiting
        assert budget.reserved_tokens == 60 and budget.tokens_in + budget.tokens_out == 15
        with pytest.raises(BudgetExhausted):  # 15 + 60 + 60 > 100 and only b in flight ...
            waiting = asyncio.create_task(budget.reserve(60, 0.0))
            await asyncio.sleep(0.01)
            budget.cancel(b)  # ... b fails (nothing charged), so it fits again
            c = await waiting
            budget.settle(c, 40, 40, 0.0)  # 95 spent
            await budget.reserve(6, 0.0)  # 101 > 100 with nothing in flight
        assert budget.stop_reason.startswith("token budget reached: 95 of 100 tokens spent")
        with pytest.raises(BudgetExhausted):  # stays stopped
            await budget.reserve(1, 0.0)
    asyncio.run(go())


def test_one_budget_shared_by_samplers_of_different_prices(fake):
    shared = Budget(max_cost=1.0)
    cheap = OpenAISampler(fake.route("cheap"), model="fake", prices={"fake": [1000, 0]}, budget=shared)
    dear = OpenAISampler(fake.route("dear"), model="fake", prices={"fake": [10000, 0]}, budget=shared)
    sample(cheap)  # 30 prompt tokens: $0.03
    sample(dear)  # $0.30
    assert shared.cost == pytest.approx(0.33) and shared.requests == 2
    assert cheap.usage()["cost"] == dear.usage()["cost"] == pytest.approx(0.33)  # the run's account
    assert dear.usage()["price_per_1m"] == [10000, 0]
    with pytest.raises(ValueError, match="^no price known for model 'm'"):
        OpenAISampler("https://api.example.com/v1", model="m", budget=shared)


def test_budget_never_overshoots_with_requests_in_flight(fake):
    url = fake.route("budget", *[("slow", 0.05)] * 40)
    # Each request's worst case: its prompt bytes (+ markers) and 20 answer tokens; each uses 42.
    sampler = OpenAISampler(url, model="fake", answer_tokens=20, concurrency=8, max_run_tokens=400,
                            max_cost=0.05, prices={"fake": [10, 100]})

    async def one(i):
        try:
            return await sampler.sample(prompt(i, user=f"p{i}"))
        except BudgetExhausted as e:
            return e

    async def go():
        out = await asyncio.gather(*(one(i) for i in range(20)))
        await sampler.close()
        return out
    out = asyncio.run(go())
    done = [s for s in out if not isinstance(s, BudgetExhausted)]
    u = sampler.usage()
    assert u["tokens_in"] + u["tokens_out"] == 42 * len(done) <= 400
    assert len(fake.requests["budget"]) == len(done) >= 2  # refused requests were never sent
    assert len(done) < 20 and u["stop_reason"].startswith("token budget reached")
    assert u["cost"] == pytest.approx(len(done) * (30 * 10 + 12 * 100) / 1e6) and u["cost"] <= 0.05


def test_budget_knobs_are_checked_with_one_line_errors():
    from evosearch.config import ConfigError, make_config
    from evosearch.backend import build_sampler

    base = {"problem": "bin_packing", "sampler": "openai", "base_url": "https://api.example.com/v1", "model": "m"}
    with pytest.raises(ConfigError, match=r"^--max-cost and --max-tokens \(the run budget\) need --sampler openai"):
        make_config({"problem": "bin_packing", "sampler": "mutate", "max_tokens": 1000})
    # A budget per arm or per actor could be spent once per arm or actor.
    with pytest.raises(ConfigError, match=r"^--max-cost and --max-tokens do not work with several samplers "
                                          r"\(--sampler A\+B, --models\) yet$"):
        make_config({**base, "max_cost": 1, "models": {"a": {"sampler": "mutate"}}})
    with pytest.raises(ConfigError, match="^--max-cost and --max-tokens do not work with --backend ray yet$"):
        make_config({**base, "max_tokens": 100, "backend": "ray"})
    with pytest.raises(ConfigError, match=r"^config 'prices': price of 'm' must be \[input, output\]"):
        make_config({**base, "prices": "{m: cheap}"})
    with pytest.raises(ConfigError, match="^no price known for model 'm', so max_cost cannot be kept"):
        build_sampler(make_config({**base, "max_cost": "5"}))
    sampler = build_sampler(make_config({**base, "max_cost": "5", "max_tokens": "9000", "prices": "{m: [1, 2]}",
                                         "answer_tokens": "99", "retries": "5", "request_timeout_s": "7"}))
    assert (sampler.budget.max_cost, sampler.budget.max_tokens, sampler.meter.price) == (5, 9000, Price(1, 2))
    assert (sampler.answer_tokens, sampler.max_retries, sampler.timeout_s, sampler.concurrency) == (99, 5, 7, 4)


def test_a_run_saved_before_the_rename_resumes_with_its_answer_limit(tmp_path):
    from evosearch.launch import saved_config

    (tmp_path / "evosearch.db").write_bytes(b"")
    (tmp_path / "config.yaml").write_text("problem: bin_packing\nsampler: local\nmax_tokens: 300\n")
    assert saved_config(tmp_path) == {"problem": "bin_packing", "sampler": "local", "answer_tokens": 300,
                                      "explore": "uniform"}  # saved before --explore, too: it explored uniformly
    (tmp_path / "config.yaml").write_text("problem: bin_packing\nexplore: curiosity\n")
    assert saved_config(tmp_path)["explore"] == "curiosity"


# --- whole runs through the CLI ---------------------------------------------------------

SMALL = ["--problem-options", "{train_items: 200, test_items: 300}", "--workers", "1", "--islands", "1", "--quiet"]


def evosearch(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "evosearch", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def stored(run_dir):
    db = sqlite3.connect(run_dir / "evosearch.db")
    db.row_factory = sqlite3.Row
    try:
        # The sampler's rows: constant tuning's trials (--tune-llm tunes the answers) send no request.
        rows = [dict(r) for r in db.execute("SELECT * FROM programs WHERE id > 0 AND sampler != 'tune' ORDER BY id")]
        meta = json.loads(db.execute("SELECT value FROM meta WHERE key = 'sampler_usage'").fetchone()[0])
        return rows, meta
    finally:
        db.close()


def test_a_run_against_a_misbehaving_server_records_every_failure(fake, tmp_path):
    # One request at a time, so the script is played in order: a 500 twice (retries exhausted),
    # garbage, a 429 then an answer, then answers.
    url = fake.route("run", 500, 500, "garbage", 429)
    out = tmp_path / "run"
    proc = evosearch("run", "bin_packing", "--sampler", "openai", "--base-url", url, "--model", "fake",
                     "--samples", "6", "--concurrency", "2", "--request-concurrency", "1", "--retries", "1",
                     "--prices", "{fake: [1, 2]}", "--out", str(out), *SMALL)
    rows, usage = stored(out)
    assert len(rows) == 6 and all(r["status"] != "pending" for r in rows)
    failed = sorted(r["reason"] for r in rows if r["status"] == "sampler_error")
    assert len(failed) == 2
    assert failed[0].endswith(": HTTP 500: boom (2 attempts: HTTP 500, HTTP 500)")
    assert ": bad answer: " in failed[1]
    answered = [r for r in rows if r["tokens_in"]]
    assert len(answered) == 4 and all((r["tokens_in"], r["tokens_out"]) == (30, 12) for r in answered)
    assert all(r["cost"] == pytest.approx((30 * 1 + 12 * 2) / 1e6) for r in answered)
    assert sorted(r["retries"] for r in answered) == [0, 0, 0, 1]  # the 429 answered on its retry
    assert (usage["requests"], usage["retries"], usage["failures"]) == (6, 2, 2)
    # Failed requests count on their rows too, so the rows add up to the sampler's account.
    assert sum(r["retries"] for r in rows) == usage["retries"]
    assert sum(r["tokens_in"] for r in rows) == usage["tokens_in"]
    assert (usage["tokens_in"], usage["tokens_out"]) == (4 * 30, 4 * 12)
    assert usage["cost"] == pytest.approx((4 * 30 * 1 + 4 * 12 * 2) / 1e6)
    assert "LLM: 120 prompt + 48 answer tokens, cost $0.0002, 6 requests, 2 retries, 2 failed" in proc.stdout
    assert f"{url}/chat/completions: retry 1 of 1 after HTTP 500" in proc.stderr  # each retry is logged
    assert f"{url}/chat/completions: retry 1 of 1 after HTTP 429" in proc.stderr


def test_the_cost_budget_ends_a_run_cleanly_and_resume_continues_it(fake, tmp_path):
    # Worst case of a request: 64 answer tokens at $1 each (prompts are free here); each uses 12.
    url = fake.route("budget_run")
    out = tmp_path / "run"
    proc = evosearch("run", "bin_packing", "--sampler", "openai", "--base-url", url, "--model", "fake",
                     "--samples", "8", "--concurrency", "2", "--answer-tokens", "64", "--max-cost", "100",
                     "--prices", "{fake: [0, 1000000]}", "--out", str(out), *SMALL)
    rows, usage = stored(out)
    # $12 per sample: after 4 ($48) the next worst case ($64) no longer fits $100.
    assert len(fake.requests["budget_run"]) == 4 and usage["cost"] == pytest.approx(48)
    assert [r["status"] == "pending" for r in rows] == [False] * 4 + [True] * (len(rows) - 4)
    assert usage["stop_reason"] == "cost budget reached: $48.0000 of $100 spent, the next request could cost $64.0000"
    assert "stopped early: cost budget reached" in proc.stdout
    assert "stopping after sample 4: cost budget reached" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == len(rows) and summary["stop_reason"].startswith("cost budget reached")

    # Resumed with a larger budget: what was spent counts, the pending samples are finished.
    evosearch("run", "--resume", str(out), "--max-cost", "150")
    rows, usage = stored(out)
    assert usage["cost"] == pytest.approx(48 + 12 * (len(fake.requests["budget_run"]) - 4)) and usage["cost"] <= 150
    assert len(fake.requests["budget_run"]) == 8  # 48 + 4 * 12 = 96, and 96 + 64 > 150
    assert [r["status"] == "pending" for r in rows][:8] == [False] * 8


# --- against a real llama.cpp server (the fixture of tests/test_samplers_llm.py) --------------


def test_llama_server_honours_n_so_one_request_serves_two_samples(server):  # noqa: F811 (fixture)
    sampler = OpenAISampler(server, model="gemma", answer_tokens=8, n=2, fold_system=True, timeout_s=120)

    async def go():
        a = await sampler.sample(prompt(1))
        b = await sampler.sample(prompt(1))  # the same prompt: the spare answer of the first request
        await sampler.close()
        return a, b
    a, b = asyncio.run(go())
    assert sampler.n_honoured is True  # llama-server decodes n choices in parallel slots
    u = sampler.usage()
    assert (u["requests"], u["answers"], u["spare_used"]) == (1, 2, 1)
    assert a.tokens_in > 5 and a.text and b.text


def test_bin_packing_run_through_llama_cpp_server_stores_tokens_and_cost(server, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    proc = evosearch("run", "bin_packing", "--sampler", "openai", "--base-url", server, "--model", "gemma",
                     "--samples", "6", "--concurrency", "2", "--answer-tokens", "96", "--temperature", "0.7",
                     "--prices", "{gemma: [0.1, 0.4]}", "--out", str(out), *SMALL)
    rows, usage = stored(out)
    assert len(rows) == 6 and all(r["status"] not in ("pending", "sampler_error") for r in rows)
    assert all(r["tokens_in"] > 100 and 0 < r["tokens_out"] <= 96 and r["model"] for r in rows)
    tokens_in, tokens_out = sum(r["tokens_in"] for r in rows), sum(r["tokens_out"] for r in rows)
    assert (usage["tokens_in"], usage["tokens_out"], usage["requests"]) == (tokens_in, tokens_out, 6)
    assert usage["cost"] == pytest.approx((tokens_in * 0.1 + tokens_out * 0.4) / 1e6) and usage["cost"] > 0
    assert sum(r["cost"] for r in rows) == pytest.approx(usage["cost"])  # the store's rows add up to the account
    assert f"LLM: {tokens_in} prompt + {tokens_out} answer tokens" in proc.stdout


def test_a_bandits_usage_adds_up_its_model_arms(fake):
    from evosearch.samplers.bandit import BanditSampler
    from evosearch.samplers.mutate import MutateSampler

    cheap = OpenAISampler(fake.route("arm_a"), model="fake", prices={"fake": [1, 2]})
    dear = OpenAISampler(fake.route("arm_b"), model="fake", prices={"fake": [10, 20]})
    bandit = BanditSampler({"a": cheap, "b": dear, "mut": MutateSampler()})
    for arm in ("a", "b", "b"):
        p = prompt()
        p.arm = arm
        asyncio.run(bandit.sample(p))
    u = bandit.usage()
    assert (u["tokens_in"], u["tokens_out"], u["requests"], u["failures"]) == (90, 36, 3, 0)
    assert u["cost"] == pytest.approx((30 * 1 + 12 * 2) / 1e6 + 2 * (30 * 10 + 12 * 20) / 1e6)
    assert set(u["arms"]) == {"a", "b"} and u["arms"]["b"]["requests"] == 2  # mutate keeps no account
    # A hosted model without a known price (nothing is sent): the total cost is unknown too.
    unpriced = BanditSampler({"a": cheap, "u": OpenAISampler("https://api.example.com/v1", model="m")})
    assert unpriced.usage()["cost"] is None and unpriced.usage()["tokens_in"] == 30
    assert BanditSampler({"mut": MutateSampler()}).usage() is None
