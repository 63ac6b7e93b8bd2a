"""One answer checker for data filtering, GRPO rewards and evaluation (rules: docs/eval.md)."""

from ring_trl.answers.checker import AnswerCase, ReferenceStatus, check, check_many, reference_status
from ring_trl.answers.extract import (
    THINK_CLOSE,
    THINK_OPEN,
    answer_span,
    completion_text,
    final_answer,
    last_boxed,
    split_reasoning,
)
from ring_trl.answers.judges import CORRECT, UNDECIDABLE, VERDICTS, WRONG, Judgement
from ring_trl.answers.kinds import KINDS, AnswerTypeError, detect_kind, resolve_kind
from ring_trl.answers.math_runner import MathResult, MathVerifier, MathVerifyWorker, default_math_verifier

__all__ = [
    "CORRECT",
    "KINDS",
    "THINK_CLOSE",
    "THINK_OPEN",
    "UNDECIDABLE",
    "VERDICTS",
    "WRONG",
    "AnswerCase",
    "AnswerTypeError",
    "Judgement",
    "MathResult",
    "MathVerifier",
    "MathVerifyWorker",
    "ReferenceStatus",
    "answer_span",
    "check",
    "check_many",
    "completion_text",
    "default_math_verifier",
    "detect_kind",
    "final_answer",
    "last_boxed",
    "reference_status",
    "resolve_kind",
    "split_reasoning",
]
