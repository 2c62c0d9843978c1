#!/usr/bin/env bash
# One-GPU check of mixed precision (bf16-mixed and 16-mixed against 32-true); about two minutes on an H100.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv && .venv/bin/python -m pip install --quiet -e '.[dev]'
fi
.venv/bin/python benchmarks/gpu_check.py "$@"
