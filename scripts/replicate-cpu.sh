#!/usr/bin/env bash
# The CPU-scale replication (docs/replication.md) in one command, about an hour on 2 cores:
# train with configs/replicate-cpu.yaml (held-out evaluation of the vanilla model at step 0 and
# of the policy every logging.eval_every steps), then the paired comparison of step 0 (vanilla)
# with the last step (trained), and the training curves.
#   bash scripts/replicate-cpu.sh                      # into runs/replicate
#   bash scripts/replicate-cpu.sh learner.lr=1e-5      # any dotted override
# Results: RUN/compare/compare.md (table, 95 % intervals, paired t test over problems, MDE),
# RUN/report.png (curves).
set -euo pipefail
cd "$(dirname "$0")/.."
rrr="${RRR:-.venv/bin/rrr}"
[ -x "$rrr" ] || rrr=rrr
run=$("$rrr" config --config configs/replicate-cpu.yaml "$@" | sed -n 's/^  output_dir: //p')
"$rrr" train --config configs/replicate-cpu.yaml "$@"
last=$(ls -d "$run"/eval/step_* | sort | tail -n 1)
"$rrr" eval --compare "$run/eval/step_00000000" "$last" --out "$run/compare"
"$rrr" report "$run"
echo "replication: $run/compare/compare.md  curves: $run/report.png"
