"""Math answer correctness with math-verify, time-bounded and usable from any thread.

math-verify bounds parse/verify time with SIGALRM, which only works in the main thread. On the main thread we
call it directly; from any other thread the whole batch is checked in a forked child (its own main thread)
that the parent kills if it overruns.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ring_trl.grpo.rewards.isolation import run_forked
from ring_trl.grpo.rewards.text import completion_text, final_answer

logger = logging.getLogger(__name__)

PARSE_TIMEOUT_S = 3
VERIFY_TIMEOUT_S = 5


def _parse_gold(gold: str) -> list:
    from math_verify import parse

    parsed = parse(gold, parsing_timeout=PARSE_TIMEOUT_S)
    if not parsed:
        parsed = parse(f"${gold}$", parsing_timeout=PARSE_TIMEOUT_S)
    return parsed


def score_answer(prediction: str | None, gold: str) -> float:
    """1.0 if the final answer matches the gold answer mathematically, else 0.0."""
    from math_verify import parse, verify

    if not prediction:
        return 0.0
    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        raise ValueError(f"math-verify cannot parse the gold answer {gold!r}")
    predicted = parse(prediction, parsing_timeout=PARSE_TIMEOUT_S)
    if not predicted:
        return 0.0
    return 1.0 if verify(gold_parsed, predicted, timeout_seconds=VERIFY_TIMEOUT_S) else 0.0


def _score_batch(pairs: list[tuple[str | None, str]]) -> list[float]:
    return [score_answer(prediction, gold) for prediction, gold in pairs]


def math_answer(
    prompts: list,
    completions: list,
    answer: list[str],
    task: list[str] | None = None,
    **_: Any,
) -> list[float | None]:
    """Reward 1/0 for the answer after `</think>`; None for rows whose `task` is not "math"."""
    results: list[float | None] = [None] * len(completions)
    pairs: list[tuple[str | None, str]] = []
    indices: list[int] = []
    for i, completion in enumerate(completions):
        if task is not None and task[i] not in (None, "math"):
            continue
        pairs.append((final_answer(completion_text(completion)), str(answer[i])))
        indices.append(i)
    if not pairs:
        return results
    if threading.current_thread() is threading.main_thread():
        scores = _score_batch(pairs)
    else:
        deadline = len(pairs) * (2 * PARSE_TIMEOUT_S + VERIFY_TIMEOUT_S) + 10
        scores = run_forked(_score_batch, (pairs,), timeout_s=deadline)
    for i, score in zip(indices, scores, strict=True):
        results[i] = score
    return results
