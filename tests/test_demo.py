"""`make demo` end to end on CPU: every stage runs and leaves sane outputs (the README's main job)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_demo_runs_every_stage_and_reports_sane_numbers(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "RING_DEMO_OUT": str(out), "RING_DEMO_TINY": str(tmp_path / "ring-tiny")}
    result = subprocess.run(
        [sys.executable, "scripts/demo.py"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "=== Demo summary ===" in result.stdout

    summary = json.loads((out / "summary.json").read_text())
    sft_rows = (out / "data" / "demo_sft.jsonl").read_text().splitlines()
    rlvr_rows = (out / "data" / "demo_rlvr.jsonl").read_text().splitlines()
    assert len(sft_rows) == summary["data"]["kept"] - 2  # two rows went to the validation split
    rlvr = [json.loads(row) for row in rlvr_rows]
    assert rlvr and all(row["answer"] or row.get("tests") for row in rlvr), (
        "every RLVR row must be verifiable"
    )
    assert summary["data"]["dropped"] == sum(summary["data"]["dropped_by_reason"].values()) > 0

    first_loss, last_loss = summary["sft_loss_first_last"]
    assert math.isfinite(first_loss) and math.isfinite(last_loss)
    assert last_loss < first_loss, "SFT loss must fall on the demo set"

    grpo_state = json.loads((out / "grpo" / "trainer_state.json").read_text())
    steps = [row for row in grpo_state["log_history"] if "reward" in row]
    assert len(steps) == 30
    for key in (
        "icepop/masked_frac",
        "icepop/masked_frac_low",
        "icepop/masked_frac_high",
        "icepop/ratio_max",
    ):
        assert all(math.isfinite(row[key]) for row in steps), key
    assert all(0.0 <= row["icepop/masked_frac"] <= 1.0 for row in steps)

    expected_plots = {"demo_sft.lengths.png", "training_loss.png", "reward_masked_frac.png"}
    assert expected_plots <= {Path(p).name for p in summary["plots"]}
    assert (out / "sft_merged" / "config.json").is_file()

    # evaluation before SFT and after GRPO, and the comparison table the summary prints
    for run in ("base", "grpo"):
        assert json.loads((out / "eval" / run / "summary.json").read_text())["metrics"]["pass@1"] >= 0.0
    assert "| metric | base | grpo |" in summary["eval_compare"]
    assert "| pass@1 |" in result.stdout and "base -> grpo" in result.stdout

    # RLHF: on-policy pairs from the GRPO model's samples, then a short DPO whose reward margin moves
    pairs = [json.loads(row) for row in (out / "data" / "demo_onpolicy.jsonl").read_text().splitlines()]
    assert pairs and summary["dpo_pairs"] == len(pairs)
    assert all(p["score_chosen"] > p["score_rejected"] for p in pairs)
    first_margin, last_margin = summary["dpo_margin_first_last"]
    assert first_margin == 0.0 and last_margin > first_margin  # the policy starts as its own reference
    assert "DPO margin" in result.stdout
