"""Grade generated samples with the one answer checker and turn them into samples.jsonl rows and metrics.

A sample is truncated when it never closed its reasoning (`</think>` missing) or ran into the token limit;
a truncated sample counts as wrong whatever its text says. Each row describes itself (id, prompt, completion,
extracted answer, verdict, reference, answer_type), so later tools (preference pairs, error analysis) need
nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ring_trl.answers import THINK_CLOSE, AnswerCase, check_many
from ring_trl.eval.data import Problem
from ring_trl.eval.metrics import SampleScore


@dataclass
class Generated:
    """One completion: its text, its length in tokens (None if unknown), whether it hit the token limit."""

    text: str
    tokens: int | None = None
    hit_limit: bool = False


def grade(
    problems: Sequence[Problem], generated: Sequence[Sequence[Generated]], answer_only: bool = False
) -> tuple[list[dict[str, Any]], list[list[SampleScore]]]:
    """(samples.jsonl rows, scores per problem). `answer_only`: completions carry no reasoning block."""
    cases = [
        AnswerCase(sample.text, problem.reference, problem.answer_type, problem.choices, answer_only)
        for problem, samples in zip(problems, generated, strict=True)
        for sample in samples
    ]
    judgements = iter(check_many(cases))
    rows: list[dict[str, Any]] = []
    scores: list[list[SampleScore]] = []
    for problem, samples in zip(problems, generated, strict=True):
        mine: list[SampleScore] = []
        for index, sample in enumerate(samples):
            judgement = next(judgements)
            truncated = sample.hit_limit or (not answer_only and THINK_CLOSE not in sample.text)
            verdict, reason = judgement.verdict, judgement.reason
            if truncated and verdict == "correct":
                verdict, reason = "wrong", "truncated"
            row: dict[str, Any] = {
                "id": problem.id,
                "sample": index,
                "prompt": problem.messages,
                "completion": sample.text,
                "extracted": judgement.extracted,
                "verdict": verdict,
                "correct": verdict == "correct",
                "reason": reason,
                "reference": problem.reference,
                "answer_type": judgement.kind,
                "truncated": truncated,
                "tokens": sample.tokens,
            }
            if problem.choices:
                row["choices"] = problem.choices
            rows.append(row)
            length = sample.tokens if sample.tokens is not None else len(sample.text)
            mine.append(
                SampleScore(verdict == "correct", judgement.vote, truncated, judgement.undecidable, length)
            )
        scores.append(mine)
    return rows, scores


def per_problem_summary(
    problems: Sequence[Problem], scores: Sequence[Sequence[SampleScore]]
) -> dict[str, Any]:
    """{id: {"correct": c, "n": n, "majority": bool}}: what --compare needs for per-problem flips."""
    from ring_trl.eval.metrics import majority_correct

    return {
        problem.id: {
            "correct": sum(s.correct for s in samples),
            "n": len(samples),
            "majority": majority_correct(samples),
        }
        for problem, samples in zip(problems, scores, strict=True)
    }
