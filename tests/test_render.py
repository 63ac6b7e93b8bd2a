"""`python -m ring_trl.llamafactory.render`: the pre-flight first, then only the rows and what carries loss."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def _render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ring_trl.llamafactory.render", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )


def test_render_prints_only_the_rows_and_their_trained_parts(tiny_model_dir: Path) -> None:
    result = _render("recipes/tiny-lora.yaml", f"model_name_or_path={tiny_model_dir}", "--rows", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("===== row 0: ") and sum(ln.startswith("===== row ") for ln in lines) == 2
    trained = [ln for ln in lines if ln.startswith("----- trained [")]
    assert len(trained) == 2 and all("</think>" in ln for ln in trained)
    assert "training example" not in result.stdout


def test_render_of_a_recipe_without_its_model_is_one_line(tmp_path: Path) -> None:
    result = _render("recipes/ring-mini-lora.yaml", f"model_name_or_path={tmp_path / 'Ring-mini-2.0'}")
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert "does not exist; download the model first" in result.stderr and "Traceback" not in result.stderr
