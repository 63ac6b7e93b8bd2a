"""A graded reward for numeric answers: how close the last number in the completion is to the reference.

Exact-match rewards give a small or random model all zeros, so every group has zero advantage and GRPO learns
nothing. This dense shaping term (1.0 when equal, decaying with the relative error) gives such models a gradient
toward the right answer; pair it with `math_answer` for the verifiable signal.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ring_trl.grpo.rewards.text import completion_text, split_reasoning

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number(text: str) -> float | None:
    """The last number in the answer part (after `</think>` when there is one), else in the whole text."""
    parts = split_reasoning(text)
    answer = parts[1] if parts is not None else text
    found = _NUMBER.findall(answer) or _NUMBER.findall(text)
    return float(found[-1]) if found else None


def numeric_closeness(prompts: list, completions: list, answer: list[str], **_: Any) -> list[float | None]:
    """exp(-|predicted - reference| / (1 + |reference|)); 0 without a number; None when the reference is not numeric."""
    scores: list[float | None] = []
    for completion, reference in zip(completions, answer, strict=True):
        try:
            target = float(str(reference).strip())
        except ValueError:
            scores.append(None)
            continue
        predicted = last_number(completion_text(completion))
        if predicted is None:
            scores.append(0.0)
            continue
        scores.append(math.exp(-abs(predicted - target) / (1.0 + abs(target))))
    return scores
