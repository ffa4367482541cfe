#!/usr/bin/env bash
# Issue 29's replication over training seeds, as pre-registered in docs/replication.md ("Does
# the gain survive a new seed?"). Resumable: each stage is skipped when its output exists, and
# a training run resumes from its newest checkpoint, so the plan can be spread over sessions.
#   bash scripts/replicate-seeds.sh            # everything, in the pre-registered order
#   bash scripts/replicate-seeds.sh s1 c1      # only these stages (vanilla, s1-s4, c1-c2,
#                                              # m1-m4, analysis)
# About 5.5 hours on 2 cores in all: vanilla evaluation ~13 min; each run ~48 min (failures
# ~1.5, 15 steps ~2 min each, the step-15 evaluation ~13); each mechanism evaluation ~8 min.
set -euo pipefail
cd "$(dirname "$0")/.."
rrr="${RRR:-.venv/bin/rrr}"
[ -x "$rrr" ] || rrr=rrr
root="${SEEDS_ROOT:-runs/seeds}"
gen="gen:countdown?n=4000&min_nums=2&max_nums=2&min_num=1&max_num=50&min_target=2&max_target=100&ops=+"
# The preset as shipped (lr 5e-6, 15 steps, no backfill) on the second split: trained on
# train-b, evaluated on the 498 problems of heldout-b, which no earlier run was evaluated on.
common=(
  --config configs/replicate-cpu.yaml
  "data.source=$gen&seed=0&part=train-b" "data.eval_source=$gen&seed=1&part=heldout-b"
  logging.eval_at_start=false logging.checkpoint_every=5 cluster.dashboard=false
)
step15=eval/step_00000015

stage() {  # stage NAME: run it unless its output exists (or other stages were asked for)
  local name=$1
  if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " =~ " $name " ]]; then return 1; fi
  return 0
}

train() {  # train NAME SEED [overrides]: one run; all three seeds set from SEED
  local name=$1 seed=$2; shift 2
  stage "$name" || return 0
  [ -f "$root/$name/$step15/results.json" ] && { echo "$name: done"; return 0; }
  "$rrr" train "${common[@]}" learner.seed="$seed" data.shuffle_seed="$seed" \
    rollout.seed="$seed" logging.output_dir="$root/$name" "$@"
}

mechanism() {  # mechanism NAME RUN: RUN's step-15 policy reflects on vanilla's failed tries
  local name=$1 run=$2
  stage "$name" || return 0
  [ -f "$root/$name/results.json" ] && { echo "$name: done"; return 0; }
  # the export appears atomically: one that exists is complete
  [ -d "$root/$run/export" ] ||
    "$rrr" export "$root/$run/checkpoints/step_00000015" --out "$root/$run/export"
  "$rrr" eval "${common[@]}" model.name_or_path="$root/$run/export" \
    --first-tries-from "$root/vanilla" --out "$root/$name"
}

wanted=("$@")
if stage vanilla && [ ! -f "$root/vanilla/results.json" ]; then
  "$rrr" eval "${common[@]}" --out "$root/vanilla"
fi
# The pre-registered order: a control early, so a partial result holds both kinds of run.
train s1 1
train c1 101 learner.shuffle_rewards=true
train s2 2
train s3 3
train c2 102 learner.shuffle_rewards=true
train s4 4
for i in 1 2 3 4; do mechanism "m$i" "s$i"; done
if stage analysis; then
  "$rrr" seeds --vanilla "$root/vanilla" \
    --trained "$root"/s{1,2,3,4}/$step15 --control "$root"/c{1,2}/$step15 \
    --mechanism "$root"/m{1,2,3,4} --k 2 --out "$root/analysis"
fi
