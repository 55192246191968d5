#!/usr/bin/env bash
# The whole course on the gpu profile, on a CUDA machine with no internet, in one command:
#
#     OUT=/some/folder bash benchmarks/gpu_course.sh          (from the repository root)
#
# Needs, next to the checkout (both git-ignored, so they travel only when named):
#   .whl/       wheels of the Python packages the machine lacks (nbconvert, nbclient, ipykernel,
#               umap-learn, ... for CPython 3.12, x86-64), installed into /tmp/site, not into python3
#   .gpu_data/cifar10-train-jpg.tar.gz
#               the 50,000 CIFAR-10 training images as JPEGs (train/<class>/NNNN.jpg), rebuilt into
#               data/cifar-10-batches-py/ by benchmarks/make_cifar10_batches.py: the last 1,000 images of
#               each class form the test split, so probe accuracies are on held-out training images,
#               not on CIFAR-10's official test set
#
# Writes to $OUT only: gpu_check.txt (machine, versions, benchmarks/gpu_check.py), torchrun.log, course.log (the
# `jepa-lite course --profile gpu` run) and notebooks.tar.gz (the executed notebooks and the small
# records of runs/: json and txt, no checkpoints); the tarball is written even when the course fails.
#
# Knobs (environment): COURSE_ONLY="05 06" runs only those notebooks (default: all, in order; "" none);
# COURSE_PROFILE (default gpu; "test" only to try this script on a CPU); GPU_CHECK=0 skips
# gpu_check.py; GPU_CHECK_ARGS (default "--models small --batch-size 256 --steps 50"); TORCHRUN_MINUTES
# (section 5) and LOADER_WORKERS (default 8) for the torchrun check.
set -euo pipefail

: "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"
REPO=$PWD
[ -f "$REPO/jepa_lite/course/profiles.py" ] || { echo "run from the repository root" >&2; exit 2; }
export PYTHONUNBUFFERED=1

# --- 1. the missing Python packages, beside (not into) the machine's python3 ---------------------
SITE=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
export PYTHONPATH="$SITE:$REPO"               # jepa_lite from the checkout, without installing it
PYTHON=$(python3 -c 'import sys; print(sys.executable)')

# The kernel: nbclient asks jupyter_client for "python3". Write that spec ourselves, first on
# JUPYTER_PATH, so it is this interpreter (and no other spec on the machine) that runs the notebooks;
# kernels inherit the environment, PYTHONPATH included.
export JUPYTER_PATH=/tmp/jupyter JUPYTER_RUNTIME_DIR=/tmp/jupyter/runtime JUPYTER_PLATFORM_DIRS=1
export IPYTHONDIR=/tmp/ipython MPLCONFIGDIR=/tmp/mplconfig
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1   # no internet: fail fast, never wait on a hub
mkdir -p /tmp/jupyter/kernels/python3 "$JUPYTER_RUNTIME_DIR" "$IPYTHONDIR" "$MPLCONFIGDIR"
cat > /tmp/jupyter/kernels/python3/kernel.json <<EOF
{"argv": ["$PYTHON", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
 "display_name": "Python 3 (ipykernel)", "language": "python", "metadata": {"debugger": false}}
EOF

# --- 2. CIFAR-10 into data/ (the repo's data root) ------------------------------------------------
# (skipped on a second call to a machine that still has them)
if [ ! -f "$SITE/sitecustomize.py" ] || [ ! -f data/cifar-10-batches-py/data_batch_1 ] || [ ! -d /tmp/cifar10/train ]; then
  rm -rf /tmp/cifar10 && mkdir -p /tmp/cifar10
  tar xzf .gpu_data/cifar10-train-jpg.tar.gz -C /tmp/cifar10
  # --sitecustomize: torchvision's CIFAR10 checks each file against the official archive's md5, which a
  # rebuilt file never matches; /tmp/site/sitecustomize.py swaps in these files' md5s (this run only).
  python3 benchmarks/make_cifar10_batches.py /tmp/cifar10/train data --test-per-class 1000 --sitecustomize "$SITE"
fi   # /tmp/cifar10/train stays: the torchrun check streams it as an image folder

# --- 3. the machine, the packages, a short throughput check --------------------------------------
{
  echo "== $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo 'unknown (no .git here)')"
  nvidia-smi || true
  python3 - <<'EOF'
import importlib.metadata as md, sys
import torch
print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability(),
          "bf16", torch.cuda.is_bf16_supported())
for name in ("torchvision", "numpy", "scipy", "scikit-learn", "numba", "matplotlib", "psutil", "packaging",
             "typing_extensions", "python-dateutil", "attrs", "jinja2", "pygments",
             "nbformat", "nbclient", "nbconvert", "jupyter_client", "ipykernel", "ipython", "umap-learn"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
import jupyter_client.kernelspec as ks
spec = ks.KernelSpecManager().get_kernel_spec("python3")
print("kernel python3:", spec.argv, "from", spec.resource_dir)
import nbclient, nbconvert, umap, ipykernel, torchvision.datasets.cifar  # noqa: F401  (imports work)
from jepa_lite.data.datasets import load_dataset
train, test = load_dataset("cifar10", "train", root="data"), load_dataset("cifar10", "test", root="data")
print(f"cifar10 in data/: {len(train)} train / {len(test)} test images, {tuple(train.images.shape[1:])}")
EOF
  if [ "${GPU_CHECK:-1}" != 0 ]; then
    # shellcheck disable=SC2086
    timeout 120 python3 benchmarks/gpu_check.py ${GPU_CHECK_ARGS:---models small --batch-size 256 --steps 50} \
      || echo "gpu_check.py failed or timed out (exit $?)"
  fi
} 2>&1 | tee "$OUT/gpu_check.txt"

# --- 4. the course ---------------------------------------------------------------------------------
NB=/tmp/course_notebooks
rm -rf "$NB" && mkdir -p "$NB"
pack() {   # the executed notebooks and runs/' small records; under 16 MiB, else notebooks 05 and 06 only
  local list=/tmp/pack.list
  (cd /tmp && find course_notebooks -name '*.ipynb' | sort) > "$list"
  find "$REPO/runs" \( -name '*.json' -o -name '*.txt' \) -size -2M 2>/dev/null | sed "s|^$REPO/||" | sort > /tmp/runs.list || true
  tar czf "$OUT/notebooks.tar.gz" -C /tmp -T "$list" -C "$REPO" -T /tmp/runs.list
  if [ "$(stat -c %s "$OUT/notebooks.tar.gz")" -gt $((16 * 1024 * 1024 - 65536)) ]; then
    (cd /tmp && ls course_notebooks/0[56]_*.ipynb 2>/dev/null) > "$list" || true
    tar czf "$OUT/notebooks.tar.gz" -C /tmp -T "$list" -C "$REPO" -T /tmp/runs.list
  fi
  ls -l "$OUT"
}
trap pack EXIT

read -r -a only <<< "${COURSE_ONLY-00 01 02 03 04 05 06 07 08}"
# one notebook per call, so that a failing notebook is reported and the later ones still run
# (notebook 06 finds notebook 05's run in runs/, which persists between calls)
# (the tarball is rewritten after each one, so a call cut off by its time limit still returns them)
for nb in "${only[@]}"; do
  [ -z "$nb" ] && continue
  echo "python3 -m jepa_lite.cli course --profile ${COURSE_PROFILE:-gpu} --only $nb"
  python3 -m jepa_lite.cli course --profile "${COURSE_PROFILE:-gpu}" --out "$NB" --only "$nb" 2>&1 \
    | tee -a "$OUT/course.log" || echo "notebook $nb FAILED" | tee -a "$OUT/course.log"
  pack > /dev/null
done

# --- 5. torchrun: the streaming path on the GPU (pinned memory, non-blocking copies) ----------------
# TORCHRUN_MINUTES=N (default 0: skipped) trains `small` for N minutes under torchrun, streaming the
# CIFAR-10 JPEG folder through DataLoader workers, and keeps its log. One GPU gives one process, so
# this checks the launch, the loader and the copies, not NCCL's all-reduce (that needs two GPUs).
if [ "${TORCHRUN_MINUTES:-0}" != 0 ]; then
  python3 -m torch.distributed.run --standalone --nproc_per_node=1 -m jepa_lite train \
    --data imagefolder:/tmp/cifar10/train --stream --loader-workers "${LOADER_WORKERS:-8}" --model small \
    --batch-size 256 --budget-minutes "$TORCHRUN_MINUTES" --log-every 200 --quiet --no-resume --out /tmp/torchrun_run 2>&1 \
    | tee "$OUT/torchrun.log" || echo "torchrun FAILED" | tee -a "$OUT/torchrun.log"
fi
