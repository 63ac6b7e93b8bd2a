"""Example of a user-owned RLVR task: reverse a word. Used by recipes/grpo/examples/my_task.yaml and docs/grpo.md.

A reward is any function `f(prompts, completions, completion_ids, **columns) -> list[float | None]`:
- `completions` are strings, or lists of messages when the prompts are chat messages;
- every other dataset column arrives as a keyword argument holding one value per completion (`answer`, `task`, ...);
- return one float per completion, or None where the reward does not apply to that row;
- exceptions, hangs (past `timeout_s`) and NaN are caught by the trainer: logged, counted in
  `rewards/<name>/failures`, and replaced by the recipe's `failure_value`.
"""

from __future__ import annotations

from typing import Any

from ring_trl.grpo.rewards.text import completion_text, final_answer


def reversed_word(
    prompts: list, completions: list, answer: list[str], partial_credit: bool = True, **_: Any
) -> list[float | None]:
    """1.0 for the exact reversed word after `</think>`; with partial_credit, the share of letters in place."""
    scores: list[float | None] = []
    for completion, expected in zip(completions, answer, strict=True):
        if not expected:
            scores.append(None)  # not a row of this task
            continue
        given = (final_answer(completion_text(completion)) or "").strip().strip("'\"`.")
        if given == expected:
            scores.append(1.0)
        elif partial_credit and given:
            same = sum(a == b for a, b in zip(given, expected, strict=False))
            scores.append(0.5 * same / max(len(given), len(expected)))
        else:
            scores.append(0.0)
    return scores
