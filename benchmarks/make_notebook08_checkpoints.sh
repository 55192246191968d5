#!/usr/bin/env bash
# The three checkpoints notebook 08 compares (data/notebook08/{jepa,pixels,both}.pt): the default
# recipe with each objective, the same steps, batches and masks. Usage:
#   bash benchmarks/make_notebook08_checkpoints.sh [STEPS] [PARALLEL]
# STEPS defaults to 5000. PARALLEL=1 trains the three at once (for a GPU); otherwise one after the
# other on one CPU thread each (reproducible weights; ~35 min each on a laptop core).
# The optimizer state is dropped from the shipped copies (the networks are all the notebook reads).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-5000}"
PARALLEL="${2:-0}"
PY="${PYTHON:-python3}"
LR="${LR:-0.0015}"      # the shipped files' learning rate (the recipe's before it moved to 3e-3)
mkdir -p data/notebook08
train() {
    OMP_NUM_THREADS=1 "$PY" -m jepa_lite.cli train --data shapes --objective "$1" --steps "$STEPS" --lr "$LR" \
        --log-every 100 --out "runs/notebook08-$1" --no-resume --quiet
    "$PY" -c "import sys, torch; c = torch.load(sys.argv[1], weights_only=True, map_location='cpu'); \
c.pop('optimizer', None); \
torch.save(c, sys.argv[2])" "runs/notebook08-$1/checkpoint.pt" "data/notebook08/$1.pt"
    echo "data/notebook08/$1.pt written"
}
if [ "$PARALLEL" = "1" ]; then
    pids=()
    for objective in jepa pixels both; do train "$objective" & pids+=($!); done
    for pid in "${pids[@]}"; do wait "$pid"; done        # fails if any of the three failed
else
    for objective in jepa pixels both; do train "$objective"; done
fi
