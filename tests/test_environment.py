"""The pinned stack installs, imports offline, and is the CPU build on a CPU machine."""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def test_stack_imports_offline() -> None:
    code = (
        "import llamafactory, trl, peft, deepspeed, bitsandbytes\n"
        "import ring_trl\n"
        "from trl import GRPOTrainer\n"
        "print(GRPOTrainer.__name__)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("GRPOTrainer")


def test_grpo_trainer_imports_even_when_trl_comes_first() -> None:
    """The shim must also repair TRL's flags when the user imported TRL before ring_trl."""
    code = "import trl\nimport ring_trl\nfrom trl import GRPOTrainer\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_llamafactory_cli_runs_offline() -> None:
    cli = shutil.which("llamafactory-cli", path=str(Path(sys.executable).parent))
    assert cli is not None, "llamafactory-cli is not installed in the environment"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([cli, "version"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0.9.5" in result.stdout


def test_installed_versions_match_the_pins() -> None:
    pins = _pins(REPO_ROOT / "requirements.txt")
    for name in (
        "llamafactory",
        "transformers",
        "trl",
        "peft",
        "datasets",
        "accelerate",
        "deepspeed",
        "torch",
    ):
        installed = md.version(name).split("+", 1)[0]
        assert installed == pins[name], f"{name}: installed {installed}, pinned {pins[name]}"


def test_lock_covers_every_direct_requirement() -> None:
    lock = _pins(REPO_ROOT / "requirements.lock")
    direct = [
        line.split("==")[0].split("#")[0].strip().lower()
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    missing = [name for name in direct if name not in lock]
    assert not missing, f"requirements.lock lacks {missing}: run `make lock`"


def test_no_cuda_wheels_on_a_cpu_machine() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("GPU machine: CUDA wheels are expected here")
    assert torch.version.cuda is None, "a CUDA build of torch was installed on a CPU machine"
    nvidia = sorted(
        d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith("nvidia-")
    )
    assert nvidia == [], f"CUDA packages installed on a CPU machine: {nvidia}"
    assert md.version("torch").split("+")[0] == _pins(REPO_ROOT / "requirements.txt")["torch"]
