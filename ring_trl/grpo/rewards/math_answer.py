"""`math_answer`: the answer checker restricted to math and number references (the reward recipes started with).

Rows whose reference is another kind (a choice letter, yes/no, a word) get None, TRL's "does not apply",
instead of a wrong 0.0 for a right answer; use `answer_match` for mixed data. Same checker, same verdicts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ring_trl.grpo.rewards.answer_match import judge_completions, rewards_from

logger = logging.getLogger(__name__)

MATH_KINDS = frozenset({"math", "number"})
_warned = False


def math_answer(
    prompts: list,
    completions: list,
    answer: Sequence[Any],
    task: Sequence[Any] | None = None,
    answer_type: Sequence[Any] | None = None,
    **_: Any,
) -> list[float | None]:
    """1.0/0.0 for the answer after `</think>` on math rows; None for code rows and non-math references."""
    global _warned
    judged = judge_completions(completions, answer, answer_type, None, task, kinds=MATH_KINDS)
    skipped = sum(
        1
        for i, j in enumerate(judged)
        if j is None
        and answer[i] is not None
        and str(answer[i]).strip()
        and (task is None or task[i] != "code")
    )
    if skipped and not _warned:
        _warned = True
        logger.warning(
            "math_answer: %d sample(s) have a non-math reference (choice, yes/no or text) and get no reward; "
            "use ring_trl.grpo.rewards:answer_match for mixed data",
            skipped,
        )
    return rewards_from(judged, "math_answer")
