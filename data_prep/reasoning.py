"""Split a teacher response into (reasoning, answer) for each delimiter style found in Long-CoT sources.

Every response must hold at most one reasoning block and no text outside the parts we keep: a nested,
repeated or stray tag, or text before the block, rejects the row with its own reason instead of letting
broken markup into a training target or silently dropping the text around it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from data_prep.errors import (
    MALFORMED_ANSWER,
    MISSING_REASONING,
    NESTED_REASONING,
    REPEATED_REASONING,
    STRAY_REASONING_TAG,
    TEXT_BEFORE_REASONING,
    UNCLOSED_ANSWER,
    UNCLOSED_REASONING,
    RowRejected,
)
from data_prep.textkeys import is_blank

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
THOUGHT_OPEN, THOUGHT_CLOSE = "<|begin_of_thought|>", "<|end_of_thought|>"
SOLUTION_OPEN, SOLUTION_CLOSE = "<|begin_of_solution|>", "<|end_of_solution|>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


@dataclass(frozen=True)
class _Reasons:
    """Reject reasons for one family of tags."""

    unclosed: str
    nested: str
    repeated: str
    stray: str


_REASONING = _Reasons(UNCLOSED_REASONING, NESTED_REASONING, REPEATED_REASONING, STRAY_REASONING_TAG)
_ANSWER = _Reasons(UNCLOSED_ANSWER, MALFORMED_ANSWER, MALFORMED_ANSWER, MALFORMED_ANSWER)


def _one_block(
    text: str, open_tag: str, close_tag: str, reasons: _Reasons, missing_open_ok: bool = False
) -> tuple[str, str, str] | None:
    """(before, body, after) of the single `open_tag`…`close_tag` block, None when neither tag occurs.

    Allowed tag sequences: open+close, and a lone close when `missing_open_ok` (R1 puts `<think>` in the
    prompt). Anything else is rejected, naming the first tag that breaks the structure.
    """
    tags = [
        (m.start(), m.group()) for m in re.finditer(f"{re.escape(open_tag)}|{re.escape(close_tag)}", text)
    ]
    if not tags:
        return None
    opens = [tag == open_tag for _, tag in tags]
    if opens[0]:
        if len(tags) == 1:
            raise RowRejected(reasons.unclosed, f"{open_tag} is never closed (truncated generation?)")
        if opens[1]:
            raise RowRejected(
                reasons.nested, f"{open_tag} opened again inside {open_tag} at char {tags[1][0]}"
            )
        if len(tags) > 2:
            if opens[2]:
                raise RowRejected(reasons.repeated, f"a second {open_tag} block starts at char {tags[2][0]}")
            raise RowRejected(reasons.stray, f"{close_tag} at char {tags[2][0]} closes nothing")
        (start, _), (end, _) = tags
        return text[:start], text[start + len(open_tag) : end], text[end + len(close_tag) :]
    if len(tags) > 1 or not missing_open_ok:
        where = "before any" if len(tags) > 1 and opens[1] else "without an opening"
        raise RowRejected(reasons.stray, f"{close_tag} at char {tags[0][0]} {where} {open_tag}")
    end = tags[0][0]
    return "", text[:end], text[end + len(close_tag) :]


def canonical_content(reasoning: str, answer: str) -> str:
    """The one assistant format every SFT record uses (the Ling/Ring thinking layout)."""
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}"


def check_no_think_tags(reasoning: str, answer: str) -> None:
    """Reasoning and answer from separate fields must not carry think tags of their own: the canonical
    record would hold a nested or second block."""
    for tag, reason in ((THINK_OPEN, NESTED_REASONING), (THINK_CLOSE, STRAY_REASONING_TAG)):
        if tag in reasoning:
            raise RowRejected(reason, f"the reasoning contains {tag} at char {reasoning.index(tag)}")
    for tag, reason in ((THINK_OPEN, REPEATED_REASONING), (THINK_CLOSE, STRAY_REASONING_TAG)):
        if tag in answer:
            raise RowRejected(reason, f"the answer contains {tag} at char {answer.index(tag)}")


def _require_reasoning(reasoning: str) -> str:
    if is_blank(reasoning):
        raise RowRejected(MISSING_REASONING, "the reasoning block is empty")
    return reasoning.strip()


def _require_nothing_before(before: str, open_tag: str) -> None:
    if not is_blank(before):
        raise RowRejected(
            TEXT_BEFORE_REASONING, f"{len(before.strip())} characters of text before {open_tag}"
        )


def strip_answer_tags(answer: str) -> str:
    """Remove AM-style ``<answer>…</answer>`` around the final answer; an unclosed tag is a truncated row,
    and text outside the tags would be lost, so it rejects the row."""
    block = _one_block(answer, ANSWER_OPEN, ANSWER_CLOSE, _ANSWER)
    if block is None:
        return answer.strip()
    before, body, after = block
    if not (is_blank(before) and is_blank(after)):
        raise RowRejected(MALFORMED_ANSWER, f"text outside {ANSWER_OPEN}…{ANSWER_CLOSE}")
    return body.strip()


def split_think(text: str) -> tuple[str, str]:
    """``<think>R</think>A`` (R1, QwQ, AM, Nemotron). A missing opener is allowed: R1 puts it in the prompt."""
    block = _one_block(text, THINK_OPEN, THINK_CLOSE, _REASONING, missing_open_ok=True)
    if block is None:
        raise RowRejected(MISSING_REASONING, "no <think>…</think> block in the response")
    before, reasoning, after = block
    _require_nothing_before(before, THINK_OPEN)
    return _require_reasoning(reasoning), strip_answer_tags(after)


def split_optional_think(text: str) -> tuple[str | None, str]:
    """Like `split_think`, but a response without any think tag is all answer (reasoning None), and an empty
    block gives reasoning "": preference data has both kinds of responses; the same structure rules apply."""
    block = _one_block(text, THINK_OPEN, THINK_CLOSE, _REASONING, missing_open_ok=True)
    if block is None:
        return None, text.strip()
    before, reasoning, after = block
    _require_nothing_before(before, THINK_OPEN)
    return reasoning.strip(), strip_answer_tags(after)


def split_thought_solution(text: str) -> tuple[str, str]:
    """Sky-T1 / Bespoke-Stratos / OpenThoughts: begin/end_of_thought, then begin/end_of_solution."""
    block = _one_block(text, THOUGHT_OPEN, THOUGHT_CLOSE, _REASONING)
    if block is None:
        raise RowRejected(MISSING_REASONING, "no <|begin_of_thought|> block in the response")
    before, reasoning, rest = block
    _require_nothing_before(before, THOUGHT_OPEN)
    solution = _one_block(rest, SOLUTION_OPEN, SOLUTION_CLOSE, _ANSWER)
    if solution is None:
        return _require_reasoning(reasoning), rest.strip()
    between, answer, after = solution
    if not (is_blank(between) and is_blank(after)):
        raise RowRejected(MALFORMED_ANSWER, f"text outside {SOLUTION_OPEN}…{SOLUTION_CLOSE}")
    return _require_reasoning(reasoning), answer.strip()


def drop_reasoning(text: str) -> str:
    """Earlier assistant turns keep only their answer: Ring's format has reasoning on the last turn only."""
    block = _one_block(text, THINK_OPEN, THINK_CLOSE, _REASONING, missing_open_ok=True)
    if block is None:
        return text.strip()
    before, _, after = block
    _require_nothing_before(before, THINK_OPEN)
    return after.strip()


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
