#!/usr/bin/env bash
# The trust measurements of one leave-one-source-out run (docs/TRUST.md): the shift detector and conformal
# coverage on the held-out source, then `mitotype adapt` on half of its slides (scripts/adapt_lodo.py).
#
#   scripts/trust_lodo.sh RUN_DIR SOURCE OUT
#
# RUN_DIR: a finished `mitotype experiment` run trained without SOURCE (train/model.pt, test.csv), e.g.
# runs/amibr_recipe_lodo/runs/stl224/lodo/MIDOG21/seed0. Writes OUT/eval_a01/metrics.json (the run's model
# calibrated on its own validation part, evaluated on every figure of SOURCE at alpha 0.1) and
# OUT/adapt/results.{json,md}; model files are temporary. Summarise several seeds with
# scripts/trust_seeds.py.
set -euo pipefail
run_dir=$1 source=$2 out=$3
model="$run_dir/train/model.pt"
[[ -f "$model" && -f "$run_dir/test.csv" ]] || { echo "$run_dir: no train/model.pt or test.csv" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
mitotype calibrate --model "$model" --data val --out "$tmp/cal.pt"
mitotype evaluate --model "$tmp/cal.pt" --data "manifest:$run_dir/test.csv" --threads 1 --n-boot 0 --out "$tmp/eval"
mkdir -p "$out/eval_a01"
cp "$tmp/eval/metrics.json" "$out/eval_a01/metrics.json"
python3 "$(dirname "$0")/adapt_lodo.py" --model "$model" --source "$source" --out "$out/adapt" --tent
