#!/bin/bash
# The colour family at equal CPU minutes (BENCHMARKS.md, colour family): each candidate x seed trains in its own
# process pinned to one core, two at a time, and is scored after MARKS minutes of CPU time spent training.
#   genai-ray --store STORE data prepare photos --count 3000
#   genai-ray --store STORE evaluate --baseline real --baseline kde --data photos   # the baselines' row
#   bench/colour_family.sh STORE/datasets/photos [MARKS, default 3,6]
set -euo pipefail
DATA=$1
MARKS=${2:-3,6}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
CANDIDATES=(
  'dcgan-hinge={}'
  'dcgan-rpgan={"model":{"d_norm":"none"},"train":{"loss":"rpgan","r1_gamma":0.05,"r2_gamma":0.05,"beta1":0.0,"beta2":0.99}}'
  'resnet-rpgan={"model":{"family":"resnet","base_channels":32},"train":{"loss":"rpgan","r1_gamma":0.05,"r2_gamma":0.05,"beta1":0.0,"beta2":0.99}}'
)
jobs=()
for seed in 0 1 2; do for cand in "${CANDIDATES[@]}"; do jobs+=("$seed|$cand"); done; done

run_on() {  # CORE JOB
  local seed=${2%%|*} cand=${2#*|}
  taskset -c "$1" "$PY" -m bench.quality_candidates "$DATA" --fitted --cpu-minutes "$MARKS" --seed "$seed" \
    --cand "$cand" 2>/dev/null | grep kimg
}
slot() {  # CORE, then the indexes of the jobs it runs one after another
  local core=$1; shift
  for i in "$@"; do run_on "$core" "${jobs[$i]}"; done
}
slot 0 0 2 4 6 8 &
slot 1 1 3 5 7 &
wait
