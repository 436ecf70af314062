#!/usr/bin/env bash
# The GPU proof in two steps (docs/performance.md#gpu-proof).
#
#   bash benchmarks/gpu_check.sh prepare      here, with the project's .venv (or PYTHON=...) and a network: into
#                                             .gpu/wheels the wheels of what the check imports and the GPU machine's
#                                             python3 lacks (CPython 3.12, x86-64; versions from constraints.txt), and
#                                             into .gpu/sweep_cpu.json a CPU run of the default sweep on
#                                             data/embeddings/sst2 (the reference the device's sweep is compared with)
#   bash benchmarks/gpu_check.sh run [ARGS]   there, without a network: install the carried wheels into a scratch
#                                             folder, run benchmarks/gpu_check.py with --out $OUT/gpu_check.json (ARGS
#                                             go to it), and keep its output in $OUT/gpu_check.log
set -euo pipefail
cd "$(dirname "$0")/.."

# Imported by the harness (imbalanced-learn and what the package's core needs) and by `embalance sweep` (MLflow's
# client and SQLite store, the typed params schema), and not in the GPU image's list (/work/.library/device/KINDS.md).
# mlflow-skinny holds all of MLflow's Python code; the full `mlflow` wheel adds the UI, not needed there.
WHEELS="imbalanced-learn sklearn-compat pydantic pydantic_core annotated-types typing-inspection
        mlflow-skinny SQLAlchemy alembic Mako cachetools databricks-sdk google-auth cryptography cffi fastapi starlette
        opentelemetry-api opentelemetry-proto opentelemetry-sdk opentelemetry-semantic-conventions
        GitPython gitdb smmap importlib_metadata sqlparse orjson"

case "${1:-}" in
prepare)
  py=${PYTHON:-.venv/bin/python}
  mkdir -p .gpu/wheels
  for name in $WHEELS; do
    pin=$(grep -i -E "^${name}==" constraints.txt) || { echo "gpu_check.sh: $name is not pinned in constraints.txt" >&2; exit 2; }
    "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64 \
      --dest .gpu/wheels "$pin"
  done
  du -sh .gpu/wheels
  PYTHONPATH=src "$py" benchmarks/gpu_check.py --device cpu --only sweep --out .gpu/sweep_cpu.json --budget 3600 --sweep-timeout 3500
  ;;
run)
  shift
  out=${OUT:-.gpu}
  if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site .gpu/wheels/*.whl
    export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
  fi
  reference=()
  if [ -f .gpu/sweep_cpu.json ]; then reference=(--reference .gpu/sweep_cpu.json); fi
  PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} \
    python3 benchmarks/gpu_check.py --out "$out/gpu_check.json" "${reference[@]}" "$@" 2>&1 | tee "$out/gpu_check.log"
  ;;
*)
  echo "usage: bash benchmarks/gpu_check.sh prepare | run [options of benchmarks/gpu_check.py]" >&2
  exit 2
  ;;
esac
