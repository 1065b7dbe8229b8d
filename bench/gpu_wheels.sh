#!/usr/bin/env bash
# Fetch, on this machine (which reaches PyPI), the wheels the lent GPU machine lacks, into .whl/
# at the repository root (ignored by git through .git/info/exclude). bench/gpu_check.sh installs
# them there. The GPU machine reaches no registry; its image has Python 3.12 with torch 2.11,
# numpy 2.5, pytest, hypothesis, scipy, transformers and the rest of its list in
# ../.library/device/KINDS.md. What it lacks is what importing Composer 0.32.1, streaming 0.13.0,
# this project's packages, its CUDA tests and bench/op.py and bench/train.py loads beyond that
# list: these, at the versions this project's .venv runs (each --no-deps: the list is closed).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
  mosaicml==0.32.1 mosaicml-streaming==0.13.0 mosaicml-cli==0.7.5
  coolname==2.2.0 importlib_metadata==8.9.0 omegaconf==2.4.0 antlr4-python3-runtime==4.13.2
  catalogue==2.0.10 backoff==2.2.1 gql==3.5.3 graphql-core==3.2.6 validators==0.36.0
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions==0.66b2
  prompt-toolkit==3.0.36 questionary==2.0.1 wcwidth==0.9.4 ruamel.yaml==0.19.1
  paramiko==3.5.1 PyNaCl==1.6.2 bcrypt==5.0.0 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12
  websockets==11.0.3 python-snappy==0.7.3 cramjam==2.14.0 zstd==1.5.6.1 brotli==1.2.1
)

grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_24_x86_64; do
  PLATFORMS+=(--platform "$p")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" -d .whl "${WHEELS[@]}"
ls .whl | wc -l | xargs echo "wheels in .whl:"
du -sh .whl
