"""Completion text helpers shared by the built-in rewards.

Ring's generation prompt already opens the reasoning block (`<role>ASSISTANT</role><think>\\n`), so a
completion normally starts inside it: `reasoning</think>\\n\\nanswer`. A completion that repeats the opening
tag at its very start is accepted too.
"""

from __future__ import annotations

from typing import Any

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def completion_text(completion: Any) -> str:
    """TRL passes a string (plain prompts) or a list of messages (conversational prompts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    raise TypeError(f"unsupported completion type {type(completion).__name__}")


def split_reasoning(text: str) -> tuple[str, str] | None:
    """(reasoning, answer) when the text has exactly one well-formed reasoning block, else None."""
    body = text.lstrip()
    if body.startswith(THINK_OPEN):
        body = body[len(THINK_OPEN) :]
    if THINK_OPEN in body or body.count(THINK_CLOSE) != 1:
        return None
    reasoning, answer = body.split(THINK_CLOSE)
    return reasoning.strip(), answer.strip()


def final_answer(text: str) -> str | None:
    """The part after the reasoning block; None when the block never closed (no answer given)."""
    if THINK_CLOSE not in text:
        return None
    return text.rsplit(THINK_CLOSE, 1)[1].strip()
