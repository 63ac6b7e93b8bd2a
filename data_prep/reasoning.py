"""Split a teacher response into (reasoning, answer) for each delimiter style found in Long-CoT sources."""

from __future__ import annotations

import re

from data_prep.errors import (
    MISSING_REASONING,
    UNCLOSED_ANSWER,
    UNCLOSED_REASONING,
    RowRejected,
)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
THOUGHT_OPEN, THOUGHT_CLOSE = "<|begin_of_thought|>", "<|end_of_thought|>"
SOLUTION_OPEN, SOLUTION_CLOSE = "<|begin_of_solution|>", "<|end_of_solution|>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

_THINK_BLOCK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


def canonical_content(reasoning: str, answer: str) -> str:
    """The one assistant format every SFT record uses (the Ling/Ring thinking layout)."""
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}"


def _require_reasoning(reasoning: str) -> str:
    reasoning = reasoning.strip()
    if not reasoning:
        raise RowRejected(MISSING_REASONING, "the reasoning block is empty")
    return reasoning


def strip_answer_tags(answer: str) -> str:
    """Remove AM-style ``<answer>…</answer>`` around the final answer; an unclosed tag is a truncated row."""
    answer = answer.strip()
    if not answer.startswith(ANSWER_OPEN):
        return answer
    end = answer.find(ANSWER_CLOSE)
    if end == -1:
        raise RowRejected(UNCLOSED_ANSWER, "<answer> is never closed")
    return answer[len(ANSWER_OPEN) : end].strip()


def split_think(text: str) -> tuple[str, str]:
    """``<think>R</think>A`` (R1, QwQ, AM, Nemotron). A missing opener is allowed: R1 puts it in the prompt."""
    start = text.find(THINK_OPEN)
    if start != -1:
        body_start = start + len(THINK_OPEN)
        end = text.find(THINK_CLOSE, body_start)
        if end == -1:
            raise RowRejected(UNCLOSED_REASONING, "<think> is never closed (truncated generation?)")
        reasoning = text[body_start:end]
    else:
        end = text.find(THINK_CLOSE)
        if end == -1:
            raise RowRejected(MISSING_REASONING, "no <think>…</think> block in the response")
        reasoning = text[:end]
    answer = strip_answer_tags(text[end + len(THINK_CLOSE) :])
    return _require_reasoning(reasoning), answer


def split_thought_solution(text: str) -> tuple[str, str]:
    """Sky-T1 / Bespoke-Stratos / OpenThoughts: begin/end_of_thought, then begin/end_of_solution."""
    start = text.find(THOUGHT_OPEN)
    if start == -1:
        raise RowRejected(MISSING_REASONING, "no <|begin_of_thought|> block in the response")
    body_start = start + len(THOUGHT_OPEN)
    end = text.find(THOUGHT_CLOSE, body_start)
    if end == -1:
        raise RowRejected(UNCLOSED_REASONING, "<|begin_of_thought|> is never closed")
    reasoning = text[body_start:end]
    rest = text[end + len(THOUGHT_CLOSE) :]
    sol_start = rest.find(SOLUTION_OPEN)
    if sol_start == -1:
        answer = rest
    else:
        sol_body = sol_start + len(SOLUTION_OPEN)
        sol_end = rest.find(SOLUTION_CLOSE, sol_body)
        if sol_end == -1:
            raise RowRejected(UNCLOSED_ANSWER, "<|begin_of_solution|> is never closed")
        answer = rest[sol_body:sol_end]
    return _require_reasoning(reasoning), answer.strip()


def drop_reasoning(text: str) -> str:
    """Earlier assistant turns keep only their answer: Ring's format has reasoning on the last turn only."""
    return _THINK_BLOCK.sub("", text).strip()


_BOXED = "\\boxed{"


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` (balanced braces), or None."""
    start = text.rfind(_BOXED)
    if start == -1:
        return None
    depth, i = 1, start + len(_BOXED)
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None
