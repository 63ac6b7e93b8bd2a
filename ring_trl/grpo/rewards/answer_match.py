"""`answer_match`: 1/0 for the final answer against the row's reference, by kind, with the one answer checker.

Reads the dataset's `answer` column and, when present, `answer_type` (math, number, choice, yesno, text) and
`choices` (option texts in letter order, so the text of the right option counts too). The verdict is exactly
what build-sft's answer filter, build-rlvr's verifiable test and `python -m ring_trl.eval` give the same
pair. Undecidable samples (math-verify timed out, the reference cannot be read as its kind) get None, TRL's
"this reward does not apply", and are counted: `take_undecidable_count()` and a log line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from ring_trl.answers import AnswerCase, Judgement, check_many, completion_text, resolve_kind

logger = logging.getLogger(__name__)

_undecidable = 0
_undecidable_lock = threading.Lock()


def _column(values: Sequence[Any] | None, i: int) -> Any:
    return None if values is None else values[i]


def judge_completions(
    completions: list,
    answer: Sequence[Any],
    answer_type: Sequence[Any] | None = None,
    choices: Sequence[Any] | None = None,
    task: Sequence[Any] | None = None,
    kinds: frozenset[str] | None = None,
) -> list[Judgement | None]:
    """The checker's judgement per completion; None for rows without a reference, code rows, or other kinds."""
    judged: list[Judgement | None] = [None] * len(completions)
    cases: list[AnswerCase] = []
    where: list[int] = []
    for i, completion in enumerate(completions):
        reference = _column(answer, i)
        if reference is None or not str(reference).strip() or _column(task, i) == "code":
            continue
        row_type, row_choices = _column(answer_type, i), _column(choices, i)
        if kinds is not None and resolve_kind(str(reference), row_type, row_choices) not in kinds:
            continue
        cases.append(AnswerCase(completion_text(completion), str(reference), row_type, row_choices))
        where.append(i)
    for i, judgement in zip(where, check_many(cases), strict=True):
        judged[i] = judgement
    return judged


def rewards_from(judged: list[Judgement | None], name: str) -> list[float | None]:
    """correct 1.0, wrong 0.0, undecidable or not applicable None (undecidable ones counted and logged)."""
    global _undecidable
    undecidable = sum(1 for j in judged if j is not None and j.undecidable)
    if undecidable:
        with _undecidable_lock:
            _undecidable += undecidable
        reasons = sorted({j.reason for j in judged if j is not None and j.undecidable})
        logger.warning(
            "%s: %d of %d samples undecidable (%s)", name, undecidable, len(judged), ", ".join(reasons)
        )
    return [None if j is None or j.undecidable else (1.0 if j.correct else 0.0) for j in judged]


def take_undecidable_count() -> int:
    """Undecidable samples since the last call (all answer rewards of this process together)."""
    global _undecidable
    with _undecidable_lock:
        count, _undecidable = _undecidable, 0
    return count


def answer_match(
    prompts: list,
    completions: list,
    answer: Sequence[Any],
    answer_type: Sequence[Any] | None = None,
    choices: Sequence[Any] | None = None,
    task: Sequence[Any] | None = None,
    **_: Any,
) -> list[float | None]:
    """1.0 when the final answer matches `answer` (by kind), 0.0 when not, None when it cannot be decided."""
    judged = judge_completions(completions, answer, answer_type, choices, task)
    return rewards_from(judged, "answer_match")
