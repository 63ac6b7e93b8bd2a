#!/usr/bin/env bash
# GPU benchmark: recipes/ring-mini-lora.yaml through plain llamafactory-cli on a RANDOM Ring-mini-shaped model
# (full shape: 20 layers, 256 experts, vocab 157184; bf16), on synthetic Long-CoT rows that fill cutoff_len.
# Reports steady tokens/s (the first logged step excluded) and peak GPU memory next to the recipe's estimate.
# It is the sft_recipe part of bench/gpu_suite.py run on its own, with more steps and no 200 s limit.
#
# Needs: 1 CUDA GPU with >= 48 GB, ~40 GB free disk (the random checkpoint is written once, ~34 GB), `make setup`.
# Usage: bash bench/sft_ring_mini.sh [--steps 8] [--cutoff-len N] [--work DIR] [extra llamafactory key=value ...]
# Output: a GPU_SUITE_SUMMARY line, $WORK/report.json, and the run's log and trainer_log.jsonl under $WORK.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STEPS=8
CUTOFF=()
WORK="$ROOT/outputs/bench/sft_ring_mini"
OVERRIDES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) STEPS="$2"; shift 2 ;;
    --cutoff-len) CUTOFF=(--sft-cutoff-len "$2"); shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *=*) OVERRIDES+=(--sft-override "$1"); shift ;;
    *) echo "sft_ring_mini.sh: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
exec bash "$ROOT/bench/gpu_suite.sh" --only sft_recipe --no-part-limits --budget 3600 --work "$WORK" \
  --sft-steps "$STEPS" "${CUTOFF[@]}" "${OVERRIDES[@]}" --json "$WORK/report.json"
