"""The answer checker: one function that build-sft, build-rlvr, the GRPO rewards and the evaluator all call.

check(completion, reference, answer_type=None, choices=None) reads the final answer (after `</think>`, the last
`\\boxed{}` when there is one), picks the kind (the row's `answer_type`, else detected from the reference) and
asks that kind's judge. The outcome is correct, wrong or undecidable (math-verify timed out, or the reference
cannot be read as its kind); callers count undecidable on its own instead of folding it into wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ring_trl.answers.extract import answer_span
from ring_trl.answers.judges import (
    UNDECIDABLE,
    WRONG,
    Choices,
    Judgement,
    choice_table,
    judge_choice,
    judge_math,
    judge_number,
    judge_text,
    judge_yesno,
    math_reference_problem,
    reference_choice,
    text_reference_problem,
)
from ring_trl.answers.kinds import (
    CHOICE,
    NUMBER,
    TEXT,
    YESNO,
    parse_number,
    reference_core,
    resolve_kind,
)
from ring_trl.answers.math_runner import MathVerifier, default_math_verifier
from ring_trl.answers.normalize import normalize_text


@dataclass(frozen=True)
class AnswerCase:
    """One thing to check: a completion (or a bare answer with answer_only=True) against a reference."""

    completion: str
    reference: str
    answer_type: str | None = None
    choices: Sequence[str] | Mapping[str, str] | None = None
    answer_only: bool = False


def check(
    completion: str,
    reference: Any,
    answer_type: str | None = None,
    choices: Choices = None,
    *,
    answer_only: bool = False,
    verifier: MathVerifier | None = None,
) -> Judgement:
    """Judge one completion against its reference (see the module docstring)."""
    reference_text = "" if reference is None else str(reference)
    kind = resolve_kind(reference_text, answer_type, choices)
    span, boxed = answer_span(completion, answer_only=answer_only)
    if span is None:
        return Judgement(WRONG, kind, None, "no_final_answer")
    if kind == CHOICE:
        return judge_choice(span, reference_text, choices)
    if kind == YESNO:
        return judge_yesno(span, reference_text)
    if kind == TEXT:
        return judge_text(span, reference_text, explicit=bool(answer_type))
    verifier = verifier or default_math_verifier()
    if kind == NUMBER:
        return judge_number(span, reference_text, boxed, verifier)
    return judge_math(span, reference_text, boxed, verifier)


def check_many(cases: Iterable[AnswerCase], verifier: MathVerifier | None = None) -> list[Judgement]:
    """check() over many cases (the math helper is shared and its answers cached)."""
    return [
        check(
            c.completion, c.reference, c.answer_type, c.choices, answer_only=c.answer_only, verifier=verifier
        )
        for c in cases
    ]


@dataclass(frozen=True)
class ReferenceStatus:
    """Can a reward be computed from this reference? status: ok, unparsable or undecidable (timeout)."""

    kind: str
    status: str
    detail: str = ""

    @property
    def usable(self) -> bool:
        return self.status == "ok"


def reference_status(
    reference: Any,
    answer_type: str | None = None,
    choices: Choices = None,
    verifier: MathVerifier | None = None,
) -> ReferenceStatus:
    """build-rlvr's "verifiable" test: the same kind rules the reward will apply to this reference."""
    text = "" if reference is None else str(reference).strip()
    kind = resolve_kind(text, answer_type, choices)
    if not reference_core(text):
        return ReferenceStatus(kind, "unparsable", "empty reference")
    if kind == CHOICE:
        ok = reference_choice(text, choice_table(choices)) is not None
        return ReferenceStatus(kind, "ok" if ok else "unparsable", "" if ok else "not a choice letter")
    if kind == YESNO:
        ok = normalize_text(reference_core(text)) in ("yes", "no", "true", "false")
        return ReferenceStatus(kind, "ok" if ok else "unparsable", "" if ok else "not yes/no/true/false")
    if kind == TEXT:
        problem = text_reference_problem(text, explicit=bool(answer_type))
        return (
            ReferenceStatus(kind, "ok") if problem is None else ReferenceStatus(kind, "unparsable", problem)
        )
    if kind == NUMBER and parse_number(reference_core(text)) is not None:
        return ReferenceStatus(kind, "ok")
    problem = math_reference_problem(text)
    if problem is not None:
        return ReferenceStatus(kind, "unparsable", problem)
    result = (verifier or default_math_verifier()).check_reference(text)
    if result.verdict is None:
        return ReferenceStatus(kind, "undecidable", result.reason)
    if not result.verdict:
        return ReferenceStatus(kind, "unparsable", "math-verify cannot parse it")
    return ReferenceStatus(kind, "ok")


__all__ = ["UNDECIDABLE", "AnswerCase", "ReferenceStatus", "check", "check_many", "reference_status"]
