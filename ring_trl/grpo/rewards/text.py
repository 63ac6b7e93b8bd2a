"""Completion text helpers for the built-in rewards: re-exported from the answer checker, which owns them.

`ring_trl.answers.extract` is the one place that decides where the reasoning ends and the final answer is, so
the rewards, the data filter and the evaluator read completions the same way.
"""

from ring_trl.answers.extract import (
    THINK_CLOSE,
    THINK_OPEN,
    answer_span,
    completion_text,
    final_answer,
    last_boxed,
    split_reasoning,
)

__all__ = [
    "THINK_CLOSE",
    "THINK_OPEN",
    "answer_span",
    "completion_text",
    "final_answer",
    "last_boxed",
    "split_reasoning",
]
