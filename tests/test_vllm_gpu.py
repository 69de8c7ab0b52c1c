"""The vLLM sampler on a real GPU. Marked ``gpu``: tests/conftest.py deselects it (and says so in
the header) unless vLLM and a CUDA GPU are importable. The model comes from EVOSEARCH_VLLM_MODEL
(a Hugging Face name or a local folder; default a 0.5B instruct model)."""
import asyncio
import os

import pytest

from evosearch.problem import load_problem
from evosearch.prompt import build_prompt
from evosearch.samplers.vllm_sampler import VLLMSampler

pytestmark = pytest.mark.gpu
MODEL = os.environ.get("EVOSEARCH_VLLM_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")


def test_vllm_sampler_batches_seeds_and_caches_prefixes():
    problem = load_problem("bin_packing", None, 0, {})
    prompts = [build_prompt(description=problem.description, skeleton=problem.skeleton,
                            parents=[(problem.skeleton, -1.0)], seed=s) for s in (1, 2, 3, 1)]
    sampler = VLLMSampler(MODEL, answer_tokens=64, gpu_memory_utilization=0.5, max_model_len=4096)

    async def go():
        await sampler.check()
        first = await asyncio.gather(*(sampler.sample(p) for p in prompts))
        again = await sampler.sample(prompts[0])
        await sampler.close()
        return first, again
    first, again = asyncio.run(go())
    assert all(s.text and 0 < s.tokens_out <= 64 and s.tokens_in > 100 for s in first)
    assert first[0].text == first[3].text == again.text  # same prompt and seed: same answer
    assert first[0].text != first[1].text
    assert sampler.usage()["batches"] == 2  # the four together, then one
    assert again.extra.get("cached_tokens", 1) > 0  # the shared prompt head came from the prefix cache
