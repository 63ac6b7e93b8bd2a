#!/usr/bin/env bash
# Creates or refreshes .venv from requirements.txt + requirements.lock, from nothing.
# Idempotent: a stamp keyed on the requirement files makes a repeat run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup_sandbox.sh  # system package for the code sandbox (before the stamp: it is not in .venv)

VENV=.venv
STAMP="$VENV/.setup-stamp"
key=$(cat requirements.txt requirements.lock pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$key" && -x "$VENV/bin/python" ]]; then
  echo "[setup] .venv is up to date (stamp $key)"
  exit 0
fi

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
echo "[setup] building .venv with $($PYTHON --version)"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
export DS_BUILD_OPS=0 PIP_PROGRESS_BAR=off

# torch first (with numpy, which it imports when present but does not require: without it the check below
# printed "Failed to initialize NumPy"): with torch present, nothing later can pull a newer (CUDA, multi-GB) torch.
torch_pin=$(grep -E '^torch==' requirements.txt)
numpy_pin=$(grep -E '^numpy==' requirements.txt)
"${PIP[@]}" install -q "$torch_pin" "$numpy_pin" 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "import torch" || { echo "[setup] torch failed to install" >&2; exit 1; }

# Everything else, constrained by the full lock; torch stays as installed.
"${PIP[@]}" install -q -c requirements.lock -r requirements.txt 2>&1 | grep -v "is ignored" || true
"${PIP[@]}" install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored" || true
"${PIP[@]}" check >/dev/null || { "${PIP[@]}" check; echo "[setup] dependency conflict" >&2; exit 1; }

# CPU-only torch: the torchvision that the stack pulls is a CUDA build and breaks transformers imports,
# and torchaudio's CUDA-linked .so files fail to load. GPU hosts are left untouched.
hook_args=()
if "$VENV/bin/python" -c "import sys, torch; sys.exit(0 if torch.version.cuda is None else 1)"; then
  hook_args=(--cpu-only)
  echo "[setup] CPU-only torch: removing torchvision, making torchaudio fall back to pure Python"
  "${PIP[@]}" uninstall -q -y torchvision 2>/dev/null || true
  site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  rm -f "$site"/torchaudio/lib/*.so
  if "${PIP[@]}" list 2>/dev/null | grep -iE '^nvidia-' ; then
    echo "[setup] CUDA packages were pulled on a CPU machine (above): refusing" >&2; exit 1
  fi
fi

# `llamafactory-cli train|export <recipe>` runs the kit's pre-flight and offline defaults, like `make sft`
# (a .pth start-up line in .venv; see ring_trl/llamafactory/cli_hook.py). On CPU-only torch it also tells
# DeepSpeed its accelerator is the CPU.
"$VENV/bin/python" -m ring_trl.llamafactory.cli_hook install ${hook_args[@]+"${hook_args[@]}"}

"$VENV/bin/python" -c "import ring_trl.runtime as r; r.hide_known_noise()
import llamafactory, trl, peft, deepspeed, bitsandbytes, data_prep" \
  || { echo "[setup] the installed stack does not import" >&2; exit 1; }
echo "$key" > "$STAMP"
echo "[setup] done"
