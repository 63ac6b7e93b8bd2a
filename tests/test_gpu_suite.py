"""bench/gpu_suite.sh: its dry run (the same code at tiny shapes on CPU) passes, and a stopped run still reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = ["bash", str(REPO / "bench" / "gpu_suite.sh")]
STOPPED = ("sft_recipe", "qlora_memory")


def _summary(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("GPU_SUITE_SUMMARY ")]
    assert len(lines) == 1, stdout[-3000:]
    return json.loads(lines[0].removeprefix("GPU_SUITE_SUMMARY "))


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.slow
def test_dry_run_runs_every_part(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [*SUITE, "--dry-run", "--work", str(tmp_path), "--tokenizer", str(tiny_model_dir)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = _summary(result.stdout)
    parts = summary["parts"]
    assert {name: part["status"] for name, part in parts.items()} == dict.fromkeys(parts, "ok"), parts
    assert result.returncode == 0 and summary["ok"] is True
    numerics = parts["expert_numerics"]
    for kernel in ("grouped_mm", "sorted"):
        # An fp32 router in a bf16 layer picks exactly the fp32 reference's experts; bf16 expert math stays close.
        assert numerics[kernel]["routing_agreement"] == 1.0 and numerics[kernel]["router_dtype"] == "float32"
        assert 0 < numerics[kernel]["max_rel_error"] < 0.05
        assert parts["train_step"]["implementations"][kernel]["tokens_per_s"] > 0
        assert parts["generation"][kernel]["tokens_per_s"] > 0
    assert numerics["routing_agreement_if_router_ran_in_bf16"] < 1.0
    sft = parts["sft_recipe"]
    assert sft["recipe"] == "recipes/ring-mini-lora.yaml" and sft["estimate_gb"] == [45.0, 50.0]
    assert sft["logged_steps"] == 2 and sft["tokens_per_s_steady"] > 0
    qlora = parts["qlora_memory"]
    assert qlora["quantized_linear_layers"] > 0 and qlora["estimate_gb"] == [17.0, 19.0]


def test_a_stopped_run_still_prints_its_summary_and_kills_the_recipe_run(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [
            *SUITE,
            "--dry-run",
            "--work",
            str(tmp_path),
            "--tokenizer",
            str(tiny_model_dir),
            "--only",
            *STOPPED,
        ],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    log = tmp_path / "sft-run.log"
    deadline = time.monotonic() + 240
    while not log.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert log.exists(), "the recipe run never started"
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=60)
    summary = _summary(stdout)
    assert process.returncode == 1 and summary["ok"] is False
    assert summary["parts"]["sft_recipe"]["status"].startswith("interrupted")
    assert summary["parts"]["qlora_memory"]["status"] == "not run (stopped)"
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "sft-run")], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "the llamafactory-cli run outlived the suite"
