#!/usr/bin/env bash
# The Ring model's GPU validation suite (bench/gpu_suite.py): expert numerics in bf16, training steps, cached
# generation, the Ring-mini LoRA recipe through llamafactory-cli and QLoRA memory, on one GPU in under 8 minutes;
# prints one JSON line starting with GPU_SUITE_SUMMARY. Installs nothing: run `make setup` first.
#
# Usage: bash bench/gpu_suite.sh [--dry-run] [--budget SECONDS] [--only PART ...] [--json FILE] [--work DIR]
#   --dry-run   the same code at tiny shapes on CPU (what tests/test_gpu_suite.py runs)
# Safe under `timeout`: each part has its own limit, and SIGTERM still prints the summary of what finished.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || { echo "gpu_suite: error: $PY missing; run \`make setup\` first" >&2; exit 2; }
export PATH="$ROOT/.venv/bin:$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false
cd "$ROOT"
exec "$PY" bench/gpu_suite.py "$@"
