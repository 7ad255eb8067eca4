#!/usr/bin/env bash
# Ensembles and 8-fold dihedral test-time augmentation under leave-one-source-out (issue 12's levers): the
# seeds of one config, trained without SOURCE, evaluated on all of SOURCE as one ensemble (mean P(atypical),
# mean threshold: `mitotype evaluate` with several --model), with and without --tta, and seed 0 with --tta;
# then each against the single seeds, paired (scripts/paired_compare.py).
#
#   scripts/ensemble_lodo.sh RUNS CONFIG SOURCE OUT     e.g. RUNS=runs/amibr_recipe_lodo/runs CONFIG=stl224
#
# Needs RUNS/CONFIG/lodo/SOURCE/seed*/train/model.pt (weights: where the grid ran) and the seeds' eval/.
# Writes OUT/{ensemble,ensemble_tta,seed0_tta}/{metrics.json,predictions.csv} and OUT/compare.md.
set -euo pipefail
runs=$1 config=$2 source=$3 out=$4
seeds=("$runs/$config/lodo/$source"/seed*)
models=() evals=()
for s in "${seeds[@]}"; do models+=(--model "$s/train/model.pt"); evals+=("$s/eval"); done
manifest="manifest:${seeds[0]}/test.csv"
here=$(dirname "$0")
evaluate() {  # NAME ARGS...: evaluate, keep the numbers and the predictions (the plots stay out of results/)
  local name=$1; shift
  mitotype evaluate "$@" --data "$manifest" --threads 1 --n-boot 1000 --out "$out/$name"
  find "$out/$name" -type f ! -name metrics.json ! -name predictions.csv -delete
}
evaluate ensemble "${models[@]}"
evaluate ensemble_tta "${models[@]}" --tta
evaluate seed0_tta --model "${seeds[0]}/train/model.pt" --tta
{
  echo "Held out $source, $config, ${#seeds[@]} seeds; A − B paired over slides (and seeds where B has several)."
  for a in ensemble ensemble_tta seed0_tta; do
    if [[ $a == seed0_tta ]]; then echo; echo "$a − seed 0:"; else echo; echo "$a − single seeds:"; fi; echo '```'
    if [[ $a == seed0_tta ]]; then python3 "$here/paired_compare.py" "$out/$a" "${evals[0]}"
    else python3 "$here/paired_compare.py" "$out/$a" "${evals[@]}"; fi
    echo '```'
  done
  echo; echo "ensemble_tta − ensemble:"; echo '```'
  python3 "$here/paired_compare.py" "$out/ensemble_tta" "$out/ensemble"; echo '```'
} > "$out/compare.md"
cat "$out/compare.md"
