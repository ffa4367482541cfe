#!/usr/bin/env bash
# Issue 29's replication over training seeds, as pre-registered in docs/replication.md ("Does
# the gain survive a new seed?"). Stages, in the pre-registered order:
#   vanilla  the vanilla model's evaluation (~13 min)
#   s1..s4   a seeded training run (~35 min), its step-15 evaluation (~13 min), then its
#            mechanism evaluation: its policy reflects on vanilla's failed first tries (~8 min)
#   c1, c2   a shuffled-reward control run and its step-15 evaluation
#   analysis `rrr seeds` over everything kept
# Every finished evaluation is kept in docs/replication-seeds/<stage>.json (its per-problem
# outcomes; the example texts are dropped): a stage whose file exists is skipped, so the plan can
# be spread over sessions (a stage is finished within one: its checkpoints stay in runs/).
#   bash scripts/replicate-seeds.sh                  # every stage not yet kept, in order
#   bash scripts/replicate-seeds.sh vanilla s1       # only these
set -euo pipefail
cd "$(dirname "$0")/.."
rrr="${RRR:-.venv/bin/rrr}"
[ -x "$rrr" ] || rrr=rrr
py="${PYTHON:-.venv/bin/python}"
root="${SEEDS_ROOT:-runs/seeds}"
keep="${SEEDS_KEEP:-docs/replication-seeds}"
gen="gen:countdown?n=4000&min_nums=2&max_nums=2&min_num=1&max_num=50&min_target=2&max_target=100&ops=+"
# The preset as shipped (lr 5e-6, 15 steps, no backfill) on the second split: trained on
# train-b, evaluated on the 498 problems of heldout-b, which no earlier run was evaluated on.
common=(
  --config configs/replicate-cpu.yaml
  "data.source=$gen&seed=0&part=train-b" "data.eval_source=$gen&seed=1&part=heldout-b"
  logging.eval_at_start=false logging.checkpoint_every=5 cluster.dashboard=false
)
mkdir -p "$keep"

wanted=("$@")
asked() {  # asked NAME: named on the command line, or nothing was named
  [ ${#wanted[@]} -eq 0 ] || [[ " ${wanted[*]} " =~ " $1 " ]]
}
kept() {  # kept NAME: its evaluation is kept already
  [ -f "$keep/$1.json" ] && echo "$1: kept in $keep/$1.json"
}

keep_results() {  # keep_results NAME RESULTS_JSON
  "$py" - "$2" "$keep/$1.json" <<'EOF'
import json, sys
results = json.load(open(sys.argv[1]))
results.pop("examples", None)
with open(sys.argv[2] + ".tmp", "w") as f:
    json.dump(results, f)
EOF
  mv "$keep/$1.json.tmp" "$keep/$1.json"
  echo "$1: kept in $keep/$1.json"
}

train() {  # train NAME SEED [overrides]: one run, all three seeds set from SEED
  local name=$1 seed=$2; shift 2
  "$rrr" train "${common[@]}" learner.seed="$seed" data.shuffle_seed="$seed" \
    rollout.seed="$seed" logging.output_dir="$root/$name" "$@"
  keep_results "$name" "$root/$name/eval/step_00000015/results.json"
}

mechanism() {  # mechanism RUN: RUN's step-15 policy reflects on vanilla's failed first tries
  local run=$1 export="$root/$1/export"
  [ -d "$export" ] ||  # an export appears atomically: one that exists is complete
    "$rrr" export "$root/$run/checkpoints/step_00000015" --out "$export"
  "$rrr" eval "${common[@]}" model.name_or_path="$export" \
    --first-tries-from "$keep/vanilla.json" --out "$root/m-$run"
  keep_results "m-$run" "$root/m-$run/results.json"
}

if asked vanilla && ! kept vanilla; then
  "$rrr" eval "${common[@]}" --out "$root/vanilla"
  keep_results vanilla "$root/vanilla/results.json"
fi
# The pre-registered order: a control early, so a partial result holds both kinds of run.
for stage in s1 c1 s2 s3 c2 s4; do
  asked "$stage" || continue
  case $stage in
    s*) kept "$stage" || train "$stage" "${stage#s}"
        kept "m-$stage" || mechanism "$stage" ;;
    c*) kept "$stage" || train "$stage" "$((100 + ${stage#c}))" learner.shuffle_rewards=true ;;
  esac
done
if asked analysis; then
  have() { for n in "$@"; do if [ -f "$keep/$n.json" ]; then echo "$keep/$n.json"; fi; done; }
  # shellcheck disable=SC2046  # one path per word
  "$rrr" seeds --vanilla "$keep/vanilla.json" --trained $(have s1 s2 s3 s4) \
    --control $(have c1 c2) --mechanism $(have m-s1 m-s2 m-s3 m-s4) --k 2 \
    --out "$root/analysis"
fi
