#!/usr/bin/env bash
# The GPU checks in one run, for a session lent the GPU machine (the device tool's `run`):
#   1. the tests that need a CUDA device (no host-device sync, CUDA equal to the CPU), with the
#      meta-device tests beside them; any of them skipped there counts as a failure;
#   2. bench/op.py --device cuda (one CutMix call; then back-to-back calls as GB/s on the 4x-box-bytes
#      model against the device's copy bandwidth measured in the same run, the >= 0.8 goal);
#   3. bench/train.py --device gpu (training and input-pipeline throughput).
# Each step's output goes to $OUT/<step>.log and the console; the script exits non-zero if any
# step failed. It needs the wheels of bench/gpu_wheels.sh in .whl/ (run that here first: the GPU
# machine reaches no registry), carried along:
#   bash bench/gpu_wheels.sh
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
# The steps are bounded to about 7 minutes in all (STEP_*_S below).
#
# `bash bench/gpu_check.sh --cpu` is a dry run on a machine without a GPU (PYTHON= a Python 3.12
# with torch 2.11, like the GPU machine's): the same imports, the CUDA tests skipping, and both
# benchmarks shortened on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
OUT=${OUT:-/tmp/gpu_check}
STEP_TESTS_S=${STEP_TESTS_S:-150}
STEP_OP_S=${STEP_OP_S:-120}
STEP_TRAIN_S=${STEP_TRAIN_S:-180}
CPU_DRY_RUN=0
[[ "${1:-}" == "--cpu" ]] && CPU_DRY_RUN=1
mkdir -p "$OUT"

if ! compgen -G ".whl/*.whl" > /dev/null; then
  echo "gpu_check: no wheels in .whl/: run bash bench/gpu_wheels.sh here and carry .whl" >&2
  exit 2
fi
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
  .whl/*.whl || { echo "gpu_check: installing .whl/ into $SITE failed" >&2; exit 2; }
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

failed=()
step() {  # step NAME SECONDS COMMAND...: run it bounded, log it, remember a failure
  local name=$1 seconds=$2; shift 2
  echo "=== $name: $* (at most ${seconds} s)"
  local began=$SECONDS
  timeout --kill-after=10 "$seconds" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - began)) s"
  [[ $rc -eq 0 ]] || failed+=("$name (exit $rc)")
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv \
    2>/dev/null || echo "nvidia-smi: not available"
  "$PY" -c "import sys, torch, numpy, composer, streaming
print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda,
      '| numpy', numpy.__version__, '| composer', composer.__version__, '| streaming', streaming.__version__)
print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"
} 2>&1 | tee "$OUT/environment.log"

step cuda_tests "$STEP_TESTS_S" "$PY" -m pytest -q -p no:cacheprovider -o addopts= -rs \
  tests/test_algorithm.py tests/test_features.py tests/test_functional.py tests/test_paste.py \
  tests/test_device_path.py -k "cuda or nothing_back or meta_refuses or branch_on_cpu"
if [[ $CPU_DRY_RUN -eq 0 ]] && grep -q "SKIPPED" "$OUT/cuda_tests.log"; then
  failed+=("cuda_tests (tests skipped on the GPU machine)")
fi

if [[ $CPU_DRY_RUN -eq 1 ]]; then
  step op "$STEP_OP_S" "$PY" bench/op.py --quick --sizes 32 --throughput --throughput-trials 2 --copy-mib 64
  step train "$STEP_TRAIN_S" "$PY" bench/train.py --device cpu --steps 3 --warmup 1 --repeats 1 \
    --pipeline-repeats 1 --images 2000 --premixed-images 1000
else
  step op "$STEP_OP_S" "$PY" bench/op.py --device cuda
  step train "$STEP_TRAIN_S" "$PY" bench/train.py --device gpu
fi

if [[ ${#failed[@]} -gt 0 ]]; then
  printf 'gpu_check: FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "gpu_check: every step passed; logs in $OUT"
