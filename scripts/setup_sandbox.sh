#!/usr/bin/env bash
# Installs bubblewrap, the sandbox of the code_tests reward (docs/sandbox.md), when it is missing.
# Needs root and apt-get (Debian/Ubuntu, CI); elsewhere it says what to install and carries on: the reward
# itself refuses to run without a working sandbox and names what is missing.
set -euo pipefail

if [[ -x /usr/bin/bwrap || -x /usr/local/bin/bwrap || -x /bin/bwrap ]]; then
  exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing bubblewrap (the code sandbox, docs/sandbox.md)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null
  /usr/bin/bwrap --version
  exit 0
fi
echo "[setup] warning: bubblewrap (bwrap) is not installed and cannot be installed from here;" \
  "install it (apt-get install bubblewrap / dnf install bubblewrap) or the code_tests reward will refuse" \
  "to run (docs/sandbox.md)" >&2
