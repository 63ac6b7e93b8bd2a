"""`llamafactory-cli train|export <recipe>` typed in the kit's .venv is `make sft` / `make export`: same pre-flight,
same offline defaults (ring_trl/llamafactory/cli_hook.py, installed by scripts/setup_env.sh as a .pth line)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from ring_trl.llamafactory.cli_hook import PTH_NAME, install, pth_text
from tests.conftest import REPO_ROOT, user_shell_env

CLI = Path(sys.executable).parent / "llamafactory-cli"


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=user_shell_env() | env,
        timeout=600,
    )


def test_setup_installed_the_hook_into_this_environment() -> None:
    import torch

    installed = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    assert installed.is_file(), "run `make setup`: it writes the llamafactory-cli hook into .venv"
    assert installed.read_text() == pth_text(cpu_only=torch.version.cuda is None)


def test_install_is_idempotent(tmp_path: Path) -> None:
    first = install(tmp_path, cpu_only=True)
    stamp = first.stat().st_mtime_ns
    assert install(tmp_path, cpu_only=True) == first and first.stat().st_mtime_ns == stamp
    assert "DS_ACCELERATOR" not in install(tmp_path, cpu_only=False).read_text()


def test_other_processes_import_nothing() -> None:
    code = "import sys; print(sorted(m for m in sys.modules if m.startswith(('ring_trl', 'transformers', 'yaml'))))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_a_recipe_without_its_model_stops_with_one_line_before_llamafactory_starts(tmp_path: Path) -> None:
    result = _cli("train", "recipes/ring-mini-lora.yaml", f"model_name_or_path={tmp_path / 'Ring-mini-2.0'}")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("preflight: recipes/ring-mini-lora.yaml: model folder")
    assert "huggingface-cli download inclusionAI/Ring-mini-2.0" in lines[0]
    assert result.stdout == ""  # LLaMA-Factory never printed a line: it did not start


def test_key_typos_are_refused_in_llamafactorys_words(tiny_model_dir: Path, tmp_path: Path) -> None:
    """In the recipe and in an override; that LLaMA-Factory's own parser says the same is checked in-process by
    tests/test_recipes.py::test_preflight_reports_unknown_keys_exactly_as_llamafactory."""
    args = yaml.safe_load((REPO_ROOT / "recipes" / "tiny-lora.yaml").read_text())
    args |= {"model_name_or_path": str(tiny_model_dir), "output_dir": str(tmp_path / "out")}
    args["lora_rnak"] = args.pop("lora_rank")
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(args))
    result = _cli("train", str(typo), "cutoff_length=64")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.splitlines() == [
        f"preflight: {typo}: Some keys are not used by the HfArgumentParser: ['cutoff_length', 'lora_rnak'] "
        "(did you mean: cutoff_length -> cutoff_len, lora_rnak -> lora_rank)"
    ]


def test_export_checks_the_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = _cli(
        "export",
        "recipes/export/tiny-merge.yaml",
        f"model_name_or_path={tiny_model_dir}",
        f"adapter_name_or_path={tmp_path / 'no-adapter'}",
        f"export_dir={tmp_path / 'merged'}",
    )
    assert result.returncode == 2 and "no-adapter not found (train it first)" in result.stderr, result.stderr


def test_the_hook_sets_the_offline_defaults_once() -> None:
    """(Other commands pass through untouched: tests/test_environment.py runs `llamafactory-cli version`.)"""
    code = (
        "import os, sys\n"
        "sys.argv = ['/x/bin/llamafactory-cli', 'version']\n"
        "from ring_trl.llamafactory.cli_hook import arm\n"
        "arm(); arm()\n"
        "from ring_trl.llamafactory import cli_hook\n"
        "print(os.environ['HF_HUB_OFFLINE'], sum(isinstance(f, cli_hook._PreflightBeforeLlamaFactory) for f in sys.meta_path))\n"
    )
    env = {k: v for k, v in user_shell_env().items() if not k.endswith("OFFLINE")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.stdout.split() == ["1", "1"], result.stderr


@pytest.mark.parametrize(
    ("argv", "checked"),
    [
        (["llamafactory-cli", "train", "recipes/tiny-lora.yaml", "max_steps=2"], True),
        (["lmf", "export", "recipes/export/tiny-merge.yaml"], True),
        (["llamafactory-cli", "train", "--model_name_or_path", "x"], False),
        (["llamafactory-cli", "webui"], False),
        (["llamafactory-cli"], False),
    ],
)
def test_which_invocations_are_checked(argv: list[str], checked: bool) -> None:
    from ring_trl.llamafactory.cli_hook import preflight_argv

    assert (preflight_argv(argv) is not None) == checked
    assert os.path.basename(argv[0]) in ("llamafactory-cli", "lmf")
