#!/usr/bin/env bash
# GPU readiness in one command (benchmarks/gpu_check.py says what it measures):
#   bash benchmarks/gpu_check.sh --out DIR [--manifest PAIRS] [--device cuda|cpu] [--tiny]
# PYTHON picks the interpreter (default: the project's .venv when there is one, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec "$PY" benchmarks/gpu_check.py "$@"
