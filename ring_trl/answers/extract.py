"""Where the final answer is in a completion: after the reasoning block, preferably inside the last \\boxed{}.

Ring's generation prompt already opens the reasoning block (`<role>ASSISTANT</role><think>\\n`), so a
completion normally starts inside it: `reasoning</think>\\n\\nanswer`. A completion that repeats the opening
tag at its very start is accepted too. A completion without `</think>` never finished reasoning: it has no
final answer at all (the evaluator counts it as truncated), which is why nothing is ever read from inside the
reasoning block.
"""

from __future__ import annotations

from typing import Any

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_BOX_COMMANDS = ("\\boxed", "\\fbox")


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


def last_boxed(text: str) -> str | None:
    """The content of the last complete `\\boxed{...}` (or `\\fbox{...}`), braces balanced; None if there is none."""
    best_start = -1
    for command in _BOX_COMMANDS:
        best_start = max(best_start, text.rfind(command + "{"))
    # An unclosed last box (cut off by the token limit) does not hide an earlier complete one.
    while best_start >= 0:
        open_at = text.index("{", best_start)
        depth = 0
        for i in range(open_at, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[open_at + 1 : i].strip()
        previous = -1
        for command in _BOX_COMMANDS:
            previous = max(previous, text.rfind(command + "{", 0, best_start))
        best_start = previous
    return None


def answer_span(text: str, answer_only: bool = False) -> tuple[str | None, bool]:
    """(the text the judges read, whether it came from a \\boxed{}); (None, False) when there is no answer.

    `answer_only=True` is for engines that return the answer without its reasoning (e.g. vLLM's reasoning
    parser): the whole text is the answer part.
    """
    answer = text.strip() if answer_only else final_answer(text)
    if not answer:
        return None, False
    boxed = last_boxed(answer)
    if boxed is not None:
        return boxed, True
    return answer, False
