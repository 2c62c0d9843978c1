#!/usr/bin/env bash
# One-GPU checks, a few minutes on an H100/H200: mixed precision (bf16-mixed and 16-mixed against 32-true), then
# the issue-11 timings on the GPU: one hypergradient against the floor, reverse- against forward-over-reverse
# products, and peak memory; then the scale benchmark (ResNet-18 and Transformer fit ratios and cosines).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv && .venv/bin/python -m pip install --quiet -e '.[dev]'
fi
.venv/bin/python benchmarks/gpu_check.py "$@"
.venv/bin/python benchmarks/hvp_modes.py --device cuda
.venv/bin/python benchmarks/hypergradient_cost.py --device cuda --repeats 5
.venv/bin/python benchmarks/scale_cost.py --device cuda --repeats 3 --cosines --damping 500
