"""DPO on Ring through plain `llamafactory-cli train recipes/tiny-dpo.yaml`: the preference signal moves.

The run starts from the base model as its own reference (LoRA adapter switched off), so the first step has
reward margin 0 and accuracy 0; a few steps later the policy prefers the chosen answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_sft import llamafactory

pytestmark = pytest.mark.slow


def test_tiny_dpo_moves_preference_accuracy_and_reward_margin(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dpo"
    llamafactory(
        "train", "tiny-dpo", {"model_name_or_path": tiny_model_dir, "output_dir": out, "max_steps": 5}
    )
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [row for row in history if "rewards/margins" in row]
    assert len(steps) == 5
    first, last = steps[0], steps[-1]
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at step 1
    assert last["rewards/margins"] > 0.1, steps
    assert last["rewards/accuracies"] >= 0.75, steps
    assert last["loss"] < first["loss"] - 0.05, steps
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "training_rewards_accuracies.png").is_file()
