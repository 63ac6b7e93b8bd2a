"""Format reward: exactly one closed reasoning block followed by a non-empty answer."""

from __future__ import annotations

from typing import Any

from ring_trl.grpo.rewards.text import completion_text, split_reasoning


def think_format(prompts: list, completions: list, **_: Any) -> list[float]:
    """1.0 for `reasoning</think>answer` with non-empty reasoning and answer and no stray think tags, else 0.0."""
    scores = []
    for completion in completions:
        parts = split_reasoning(completion_text(completion))
        scores.append(1.0 if parts is not None and parts[0] and parts[1] else 0.0)
    return scores
