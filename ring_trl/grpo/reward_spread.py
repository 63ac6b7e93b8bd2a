"""A warning when rewards show no spread: every group of completions scored alike, so nothing is learned.

GRPO's advantage is a completion's reward minus its group's mean. When all `num_generations` completions of
every prompt get the same total reward (TRL logs `frac_reward_zero_std = 1`), every advantage is 0 and the
policy gradient vanishes: the run spends compute and learns nothing, silently. One step like that is normal;
several in a row usually mean a reward that cannot score these completions.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

ZERO_SPREAD_KEY = "frac_reward_zero_std"


class RewardSpreadWatch(TrainerCallback):
    """Logs one warning (what to check included) after `patience` logged steps without reward spread."""

    def __init__(self, patience: int = 3) -> None:
        self.patience = patience
        self.streak = 0
        self.warned = False

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any):
        if not logs or ZERO_SPREAD_KEY not in logs:
            return
        if logs[ZERO_SPREAD_KEY] < 1.0 - 1e-6:
            self.streak, self.warned = 0, False
            return
        self.streak += 1
        if self.streak >= self.patience and not self.warned:
            self.warned = True
            logger.warning(no_spread_message(self.streak, logs))


def no_spread_message(steps: int, logs: dict[str, float]) -> str:
    """What happened and what to check, with this step's per-reward means and failure counts."""
    means = {
        key.removeprefix("rewards/").removesuffix("/mean"): value
        for key, value in logs.items()
        if key.startswith("rewards/") and key.endswith("/mean")
    }
    failures = logs.get("rewards/failures", 0.0)
    shown = ", ".join(f"{name}={value:g}" for name, value in means.items()) or "none logged"
    return (
        f"rewards show no spread for {steps} logged steps (frac_reward_zero_std = 1): every completion of a "
        f"prompt got the same reward, so every advantage is 0 and nothing is learned. Reward means: {shown}; "
        f"failures this step: {failures:g}. Check that each reward can score these completions (does the "
        "answer come after </think>, and does max_completion_length leave room to close the reasoning? "
        "completions/clipped_ratio near 1 says it does not), that rewards/<name>/failures is 0, that the "
        "dataset columns the rewards read are filled, and that num_generations > 1 with temperature > 0."
    )
