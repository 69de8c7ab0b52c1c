"""The vLLM sampler's mapping to and from vLLM, without vLLM (no GPU here): SamplingParams
arguments, RequestOutput -> Samples, batching, spares and the budget. vLLM's own objects are
stood in for by plain namespaces with the attributes vLLM documents; the real thing runs in
tests/test_vllm_gpu.py where vLLM and a CUDA GPU exist."""
import asyncio
import sys
from types import SimpleNamespace as NS

import pytest

from evosearch.samplers import make_sampler
from evosearch.samplers.base import Prompt, SamplerError
from evosearch.samplers.budget import BudgetExhausted, Price
from evosearch.samplers.local import COMPLETION_STOPS
from evosearch.samplers.vllm_sampler import VLLMSampler, chat_messages, samples_from_output, sampling_params_kwargs

HEADER = "def priority_v1(item, bins):\n"


def prompt(seed=7, user="Improve priority."):
    return Prompt("You improve heuristics.", user, [], ["priority"], seed, completion="# code\n" + HEADER,
                  header=HEADER)


def output(texts, prompt_tokens=5, tokens_each=3, cached=None):
    out = NS(prompt_token_ids=list(range(prompt_tokens)),
             outputs=[NS(text=t, token_ids=[1] * tokens_each, finish_reason="stop") for t in texts])
    if cached is not None:
        out.num_cached_tokens = cached
    return out


def test_sampling_params_carry_the_samples_settings():
    assert sampling_params_kwargs(prompt(), n=2, temperature=0.7, top_p=None, answer_tokens=99, mode="chat") == \
        {"n": 2, "temperature": 0.7, "max_tokens": 99, "seed": 7}
    kw = sampling_params_kwargs(prompt(3), n=1, temperature=0.0, top_p=0.9, answer_tokens=10, mode="completion")
    assert kw == {"n": 1, "temperature": 0.0, "max_tokens": 10, "seed": 3, "top_p": 0.9, "stop": COMPLETION_STOPS}


def test_request_output_becomes_samples_and_the_first_carries_the_usage():
    chat = samples_from_output(output(["a", "b"], cached=4), model="m", mode="chat", header=HEADER, seconds=2.0,
                               cost=0.5)
    assert [s.text for s in chat] == ["a", "b"]
    assert [(s.tokens_in, s.tokens_out, s.seconds) for s in chat] == [(5, 6, 2.0), (0, 0, 0.0)]
    assert chat[0].extra == {"finish_reason": "stop", "cost": 0.5, "retries": 0, "answers_in_request": 2,
                             "answer": 0, "cached_tokens": 4}
    assert chat[1].extra["cost"] == 0.0 and chat[1].model == "m"
    (done,) = samples_from_output(output(["    return -bins\n"]), model="m", mode="completion", header=HEADER,
                                  seconds=1.0, cost=None)
    assert done.text == HEADER + "    return -bins\n" and done.extra["mode"] == "completion"
    assert done.extra["cost"] is None


def test_chat_messages():
    assert [m["role"] for m in chat_messages(prompt(), fold_system=False)] == ["system", "user"]
    (turn,) = chat_messages(prompt(), fold_system=True)
    assert turn == {"role": "user", "content": "You improve heuristics.\n\nImprove priority."}


class StandIn(VLLMSampler):
    """Replaces only vLLM's generate: each batch's prompts answered through samples_from_output."""

    batches: list

    def _generate(self, prompts):
        self.batches.append([p.seed for p in prompts])
        return [samples_from_output(output([f"{p.seed}-{j}" for j in range(self.n)], prompt_tokens=10,
                                           tokens_each=20), model=self.model, mode=self.mode, header=p.header,
                                    seconds=0.1, cost=None) for p in prompts]


def test_samples_in_flight_together_form_one_batch_and_spares_are_handed_out():
    sampler = StandIn("m", n=2, answer_tokens=20)
    sampler.batches = []

    async def go():
        first = await asyncio.gather(*(sampler.sample(prompt(s, user=f"u{s}")) for s in range(3)))
        spare = await sampler.sample(prompt(99, user="u1"))  # same prompt as seed 1: its second answer
        await sampler.close()
        return first, spare
    first, spare = asyncio.run(go())
    assert sampler.batches == [[0, 1, 2]]
    assert [s.text for s in first] == ["0-0", "1-0", "2-0"] and spare.text == "1-1" and spare.tokens_in == 0
    u = sampler.usage()
    assert (u["tokens_in"], u["tokens_out"], u["requests"], u["batches"], u["spare_used"]) == (30, 120, 3, 1, 1)
    assert u["cost"] == 0.0  # a local model is free unless priced


def test_the_budget_holds_for_vllm_too():
    sampler = StandIn("m", answer_tokens=20, max_run_tokens=200, prices={"m": [1, 1]})
    sampler.batches = []
    assert sampler.meter.price == Price(1, 1)

    async def go():
        got = []
        for s in range(10):
            try:
                got.append(await sampler.sample(prompt(s, user=f"u{s}")))
            except BudgetExhausted:
                break
        return got
    got = asyncio.run(go())
    # Worst case per request: 23 + 16 + 17 + 16 + 16 = 88 prompt + 20 answer tokens; each uses 30.
    assert len(got) == 4 and sampler.usage()["tokens_in"] + sampler.usage()["tokens_out"] == 120


def test_built_by_name_from_plain_options_without_touching_vllm():
    sampler = make_sampler("vllm", model="Qwen/Qwen2.5-Coder-0.5B-Instruct", tensor_parallel_size=2,
                           llm_options={"dtype": "bfloat16"})
    assert sampler.llm_options["tensor_parallel_size"] == 2 and sampler.llm_options["enable_prefix_caching"]
    assert sampler.llm_options["dtype"] == "bfloat16" and sampler._llm is None
    with pytest.raises(ValueError, match="^mode must be chat or completion"):
        VLLMSampler("m", mode="edit")


def test_missing_vllm_is_a_one_line_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what an absent package looks like to import
    with pytest.raises(SamplerError, match=r"^the vllm sampler needs vLLM \(.*\); install with pip install -e "
                                          r"'\.\[vllm\]' on a machine with a CUDA GPU$"):
        asyncio.run(VLLMSampler("m").check())
    with pytest.raises(SamplerError, match=r"^the vllm sampler needs vLLM"):
        asyncio.run(VLLMSampler("m").sample(prompt()))
