"""`make demo` end to end on CPU: every stage runs and leaves sane outputs (the README's main job)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_every_stage_and_reports_sane_numbers(
    fresh_clone: Path, demo_in_fresh_clone: subprocess.CompletedProcess[str]
) -> None:
    """`make demo` as the README says, in a fresh clone (tests/conftest.py), outputs under outputs/demo."""
    result = demo_in_fresh_clone
    out = fresh_clone / "outputs" / "demo"
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
    assert len(steps) == 8
    for key in (
        "icepop/masked_frac",
        "icepop/masked_frac_low",
        "icepop/masked_frac_high",
        "icepop/ratio_max",
    ):
        assert all(math.isfinite(row[key]) for row in steps), key
    assert all(0.0 <= row["icepop/masked_frac"] <= 1.0 for row in steps)
    masked = sum(row["icepop/masked_tokens"] for row in steps)
    total = sum(row["icepop/tokens"] for row in steps)
    assert 0 < masked < total / 2, (
        f"the tiny recipe's band must show IcePop at work: {masked} of {total} masked"
    )

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


# Third-party messages that are either fixed at their cause or hidden by the kit (README, "Troubleshooting").
KNOWN_NOISE = (
    "Failed to load CPU gemm_4bit_forward",
    "Setting accelerator to CPU",
    "Failed to initialize NumPy",
    "'pin_memory' argument is set as true but no accelerator is found",
)


@pytest.mark.slow
def test_demo_shows_none_of_the_known_third_party_noise(
    fresh_clone: Path, demo_in_fresh_clone: subprocess.CompletedProcess[str]
) -> None:
    texts = {"make demo": demo_in_fresh_clone.stdout + demo_in_fresh_clone.stderr}
    texts |= {log.name: log.read_text() for log in (fresh_clone / "outputs" / "demo" / "logs").glob("*.log")}
    found = [f"{name}: {noise}" for name, text in texts.items() for noise in KNOWN_NOISE if noise in text]
    assert len(texts) > 5 and not found, found
