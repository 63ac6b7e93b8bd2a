"""Schema readers: each turns one raw row of a known Long-CoT dataset into an `Example`.

A reader never filters on quality; it only says what the row contains, or rejects a row whose structure
is broken (missing field, unclosed reasoning block) with a named reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from data_prep.errors import (
    ANSWER_MISMATCH,
    MALFORMED_ROW,
    MISSING_FIELD,
    MISSING_REASONING,
    RowRejected,
    UsageError,
)
from data_prep.reasoning import (
    THOUGHT_OPEN,
    drop_reasoning,
    last_boxed,
    split_think,
    split_thought_solution,
)
from data_prep.textkeys import is_blank


@dataclass
class Example:
    """What a reader extracted from one row, before any filter."""

    prompt: list[dict[str, str]]  # messages before the final assistant turn (system first, if any)
    reasoning: str | None = None
    answer: str | None = None
    reference_answer: str | None = None
    raw_id: str | None = None
    task: str | None = None
    tests: list[dict[str, str]] | None = field(default=None)


Reader = Callable[[dict[str, Any]], Example]


def _field(row: dict[str, Any], key: str, kind: type | tuple[type, ...] = str) -> Any:
    if key not in row or row[key] is None:
        raise RowRejected(MISSING_FIELD, f"required field {key!r} is missing")
    value = row[key]
    if not isinstance(value, kind):
        raise RowRejected(
            MALFORMED_ROW, f"field {key!r} should be {_kind_name(kind)}, got {type(value).__name__}"
        )
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _optional_str(row: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = row.get(key)
        if value is not None and not isinstance(value, (dict, list)) and not is_blank(str(value)):
            return str(value).strip()
    return None


def _raw_id(row: dict[str, Any]) -> str | None:
    return _optional_str(row, "id", "uuid", "problem_id", "idx")


def _user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


_ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "system": "system",
}


def _turns(messages: list[Any], role_key: str, content_key: str, where: str) -> list[dict[str, str]]:
    """Normalise a message list to role/content with roles user/assistant/system."""
    turns: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or role_key not in message or content_key not in message:
            raise RowRejected(MALFORMED_ROW, f"{where}[{i}] needs {role_key!r} and {content_key!r}")
        role = _ROLE_ALIASES.get(str(message[role_key]).lower())
        if role is None:
            raise RowRejected(MALFORMED_ROW, f"{where}[{i}] has unknown role {message[role_key]!r}")
        content = message[content_key]
        if not isinstance(content, str):
            raise RowRejected(MALFORMED_ROW, f"{where}[{i}].{content_key} should be a string")
        turns.append({"role": role, "content": content})
    return turns


def _split_final(turns: list[dict[str, str]], where: str) -> tuple[list[dict[str, str]], str]:
    """Prompt turns (earlier assistant turns lose their reasoning) and the final assistant text."""
    if not turns or turns[-1]["role"] != "assistant":
        raise RowRejected(MALFORMED_ROW, f"{where} does not end with an assistant turn")
    prompt = []
    for turn in turns[:-1]:
        if turn["role"] == "assistant":
            turn = {"role": "assistant", "content": drop_reasoning(turn["content"])}
        prompt.append(turn)
    if not any(t["role"] == "user" for t in prompt):
        raise RowRejected(MALFORMED_ROW, f"{where} has no user turn")
    return prompt, turns[-1]["content"]


def _prompt_only(turns: list[dict[str, str]]) -> list[dict[str, str]]:
    """For RLVR-style rows that may have no assistant turn at all."""
    if turns and turns[-1]["role"] == "assistant":
        turns = turns[:-1]
    return turns


# --- OpenR1-Math ---------------------------------------------------------------------------------------


def read_openr1(row: dict[str, Any]) -> Example:
    """OpenR1-Math-220k: the first generation that math-verify marked correct (and complete, when known)."""
    problem = _field(row, "problem")
    reference = _optional_str(row, "answer")
    generations = row.get("generations")
    if generations is None:
        turns = _turns(_field(row, "messages", list), "role", "content", "messages")
        prompt, final = _split_final(turns, "messages")
        reasoning, answer = split_think(final)
        return Example(prompt, reasoning, answer, reference, _raw_id(row))
    if not isinstance(generations, list) or not generations:
        raise RowRejected(MALFORMED_ROW, "field 'generations' should be a non-empty list")
    correct = row.get("correctness_math_verify")
    complete = row.get("is_reasoning_complete")
    chosen = None
    for i, generation in enumerate(generations):
        ok = correct is None or (isinstance(correct, list) and i < len(correct) and bool(correct[i]))
        done = not isinstance(complete, list) or (i < len(complete) and bool(complete[i]))
        if ok and done and isinstance(generation, str):
            chosen = generation
            break
    if chosen is None:
        raise RowRejected(ANSWER_MISMATCH, "no generation is marked correct by correctness_math_verify")
    reasoning, answer = split_think(chosen)
    return Example([_user(problem)], reasoning, answer, reference, _raw_id(row))


# --- OpenThoughts / Bespoke-Stratos / Sky-T1 ------------------------------------------------------------


def read_thought(row: dict[str, Any]) -> Example:
    """begin/end_of_thought sources. Their system prompt explains those delimiters, so it is dropped."""
    turns = _turns(_field(row, "conversations", list), "from", "value", "conversations")
    turns = [t for t in turns if t["role"] != "system"]
    prompt, final = _split_final(turns, "conversations")
    reasoning, answer = split_thought_solution(final)
    system = row.get("system")
    if isinstance(system, str) and system.strip() and THOUGHT_OPEN not in system:
        prompt = [{"role": "system", "content": system.strip()}, *prompt]
    return Example(prompt, reasoning, answer, None, _raw_id(row))


# --- s1K ------------------------------------------------------------------------------------------------


def _reference_from_solution(solution: str | None) -> str | None:
    if not solution:
        return None
    boxed = last_boxed(solution)
    if boxed:
        return boxed
    return solution if len(solution) <= 64 else None


def read_s1k(row: dict[str, Any]) -> Example:
    """s1K: one thinking trajectory (list of one string) and the attempt as the answer."""
    question = _field(row, "question")
    trajectories = _field(row, "thinking_trajectories", (list, str))
    if isinstance(trajectories, list):
        if not all(isinstance(t, str) for t in trajectories):
            raise RowRejected(MALFORMED_ROW, "field 'thinking_trajectories' should hold strings")
        trajectories = "\n".join(trajectories)
    if is_blank(trajectories):
        raise RowRejected(MISSING_REASONING, "thinking_trajectories is empty")
    attempt = _field(row, "attempt")
    reference = _reference_from_solution(_optional_str(row, "solution"))
    return Example([_user(question)], trajectories.strip(), attempt.strip(), reference, _raw_id(row))


# --- LIMO -----------------------------------------------------------------------------------------------


def read_limo(row: dict[str, Any]) -> Example:
    """LIMO: the solution is the reasoning chain; the final answer is stated after it."""
    question = _field(row, "question")
    solution = _field(row, "solution")
    answer = _optional_str(row, "answer")
    if is_blank(solution):
        raise RowRejected(MISSING_REASONING, "solution is empty")
    final = f"The final answer is $\\boxed{{{answer}}}$." if answer else ""
    return Example([_user(question)], solution.strip(), final, answer, _raw_id(row))


# --- AM-distilled ---------------------------------------------------------------------------------------


def read_am(row: dict[str, Any]) -> Example:
    """AM-*-Distilled: messages with ``info``; the assistant has <think> plus <answer> tags."""
    messages = _field(row, "messages", list)
    turns = _turns(messages, "role", "content", "messages")
    prompt, final = _split_final(turns, "messages")
    reasoning, answer = split_think(final)
    return Example(prompt, reasoning, answer, _am_reference(messages), _raw_id(row))


# --- Nemotron post-training -----------------------------------------------------------------------------

_LLAMA_TURN = re.compile(
    r"<\|start_header_id\|>(\w+)<\|end_header_id\|>\s*(.*?)(?:<\|eot_id\|>|$)",
    re.DOTALL,
)
_THINKING_SWITCH = re.compile(r"detailed thinking (on|off)", re.IGNORECASE)


def _nemotron_input(value: Any) -> list[dict[str, str]]:
    if isinstance(value, list):
        return _turns(value, "role", "content", "input")
    if not isinstance(value, str):
        raise RowRejected(MALFORMED_ROW, "field 'input' should be a list of messages or a string")
    found = _LLAMA_TURN.findall(value)
    if not found:
        return [_user(value.strip())]
    turns = []
    for role, content in found:
        mapped = _ROLE_ALIASES.get(role.lower())
        if mapped is not None and content.strip():
            turns.append({"role": mapped, "content": content.strip()})
    return turns


def read_nemotron(row: dict[str, Any]) -> Example:
    """Llama-Nemotron post-training: ``reasoning: off`` rows have no trace and are rejected for SFT."""
    if row.get("input") is None:
        raise RowRejected(MISSING_FIELD, "required field 'input' is missing")
    turns = [t for t in _nemotron_input(row["input"]) if t["role"] != "system"]
    output = _field(row, "output")
    system = _THINKING_SWITCH.sub("", str(row.get("system_prompt") or "")).strip()
    prompt = [{"role": "system", "content": system}, *turns] if system else turns
    if str(row.get("reasoning", "on")).lower() == "off":
        raise RowRejected(MISSING_REASONING, "row has reasoning: off (no thinking trace)")
    reasoning, answer = split_think(output)
    return Example(prompt, reasoning, answer, None, _raw_id(row))


# --- generic OpenAI messages / ShareGPT -----------------------------------------------------------------


def read_messages(row: dict[str, Any]) -> Example:
    """OpenAI-style messages; the reasoning is a <think> block or a ``reasoning_content`` field."""
    messages = _field(row, "messages", list)
    turns = _turns(messages, "role", "content", "messages")
    prompt, final = _split_final(turns, "messages")
    last = messages[-1]
    separate = _optional_str(last, "reasoning_content", "reasoning") if isinstance(last, dict) else None
    if separate is not None:
        reasoning, answer = separate, final.strip()
    else:
        reasoning, answer = split_think(final)
    return Example(prompt, reasoning, answer, _optional_str(row, "reference_answer"), _raw_id(row))


def read_sharegpt(row: dict[str, Any]) -> Example:
    """ShareGPT conversations (from/value); the final gpt turn carries a <think> block."""
    turns = _turns(_field(row, "conversations", list), "from", "value", "conversations")
    prompt, final = _split_final(turns, "conversations")
    system = row.get("system")
    if isinstance(system, str) and system.strip() and not any(t["role"] == "system" for t in prompt):
        prompt = [{"role": "system", "content": system.strip()}, *prompt]
    reasoning, answer = split_think(final)
    return Example(prompt, reasoning, answer, _optional_str(row, "reference_answer"), _raw_id(row))


# --- simple prompt / reasoning / answer -----------------------------------------------------------------


def _tests(row: dict[str, Any]) -> list[dict[str, str]] | None:
    tests = row.get("tests")
    if tests is None:
        return None
    if not isinstance(tests, list) or not all(
        isinstance(t, dict) and "input" in t and "output" in t for t in tests
    ):
        raise RowRejected(MALFORMED_ROW, "field 'tests' should be a list of {input, output}")
    return [{"input": str(t["input"]), "output": str(t["output"])} for t in tests]


def read_simple(row: dict[str, Any]) -> Example:
    """``prompt``/``reasoning``/``answer``; without ``reasoning`` the answer is the reference (RLVR rows)."""
    prompt_text = _optional_str(row, "prompt", "question", "problem")
    if prompt_text is None:
        raise RowRejected(MISSING_FIELD, "required field 'prompt' (or 'question'/'problem') is missing")
    prompt = [_user(prompt_text)]
    system = _optional_str(row, "system")
    if system:
        prompt = [{"role": "system", "content": system}, *prompt]
    reasoning = row.get("reasoning")
    answer = _optional_str(row, "answer")
    reference = _optional_str(row, "reference_answer")
    if reasoning is None and reference is None:
        reference = answer
    if reasoning is not None and not isinstance(reasoning, str):
        raise RowRejected(MALFORMED_ROW, "field 'reasoning' should be a string")
    task = _optional_str(row, "task")
    return Example(prompt, reasoning, answer, reference, _raw_id(row), task, _tests(row))


READERS: dict[str, Reader] = {
    "openr1": read_openr1,
    "thought": read_thought,
    "s1k": read_s1k,
    "limo": read_limo,
    "am": read_am,
    "nemotron": read_nemotron,
    "messages": read_messages,
    "sharegpt": read_sharegpt,
    "simple": read_simple,
}

ALIASES = {
    "openr1-math": "openr1",
    "openthoughts": "thought",
    "bespoke-stratos": "thought",
    "bespoke": "thought",
    "sky-t1": "thought",
    "s1": "s1k",
    "am-distilled": "am",
    "openai": "messages",
    "generic": "simple",
}


def resolve_format(name: str) -> str:
    """Canonical reader name for a user-facing name ('auto' stays 'auto')."""
    key = name.strip().lower()
    if key == "auto" or key in READERS:
        return key
    if key in ALIASES:
        return ALIASES[key]
    known = ", ".join(sorted([*READERS, *ALIASES, "auto"]))
    raise UsageError(f"unknown format {name!r}; known formats: {known}")


def detect_format(row: dict[str, Any]) -> str | None:
    """Guess the schema from one row's keys (None when nothing fits)."""
    keys = set(row)
    if "generations" in keys and "problem" in keys:
        return "openr1"
    if "thinking_trajectories" in keys:
        return "s1k"
    if "conversations" in keys:
        convs = row["conversations"]
        text = (
            " ".join(str(c.get("value", "")) for c in convs if isinstance(c, dict))
            if isinstance(convs, list)
            else ""
        )
        return "thought" if THOUGHT_OPEN in text else "sharegpt"
    if "messages" in keys:
        msgs = row["messages"]
        has_info = isinstance(msgs, list) and any(isinstance(m, dict) and "info" in m for m in msgs)
        return "am" if has_info else "messages"
    if {"input", "output"} <= keys:
        return "nemotron"
    if {"question", "solution", "answer"} <= keys:
        return "limo"
    if keys & {"prompt", "question", "problem"}:
        return "simple"
    return None


# --- prompt + reference only (RLVR) ---------------------------------------------------------------------


def _am_reference(messages: list[Any]) -> str | None:
    for message in messages:
        info = message.get("info") if isinstance(message, dict) else None
        if isinstance(info, dict) and _optional_str(info, "reference_answer"):
            return _optional_str(info, "reference_answer")
    return None


def prompt_only(fmt: str, row: dict[str, Any]) -> Example:
    """The prompt turns and reference answer of a row, without requiring a reasoning trace (RLVR)."""
    reference = _optional_str(row, "reference_answer")
    if fmt == "simple":
        return read_simple(row)
    if fmt == "openr1":
        return Example(
            [_user(_field(row, "problem"))],
            reference_answer=_optional_str(row, "answer"),
            raw_id=_raw_id(row),
        )
    if fmt in ("s1k", "limo"):
        ref = (
            _reference_from_solution(_optional_str(row, "solution"))
            if fmt == "s1k"
            else _optional_str(row, "answer")
        )
        return Example([_user(_field(row, "question"))], reference_answer=ref, raw_id=_raw_id(row))
    if fmt in ("thought", "sharegpt"):
        turns = _turns(_field(row, "conversations", list), "from", "value", "conversations")
        return Example(
            _prompt_only(turns),
            reference_answer=reference or _optional_str(row, "answer"),
            raw_id=_raw_id(row),
        )
    if fmt in ("am", "messages"):
        messages = _field(row, "messages", list)
        turns = _prompt_only(_turns(messages, "role", "content", "messages"))
        ref = reference or _optional_str(row, "answer") or (_am_reference(messages) if fmt == "am" else None)
        return Example(
            turns,
            reference_answer=ref,
            raw_id=_raw_id(row),
            task=_optional_str(row, "task"),
            tests=_tests(row),
        )
    if fmt == "nemotron":
        if row.get("input") is None:
            raise RowRejected(MISSING_FIELD, "required field 'input' is missing")
        return Example(
            _prompt_only(_nemotron_input(row["input"])), reference_answer=reference, raw_id=_raw_id(row)
        )
    raise RowRejected(MALFORMED_ROW, f"no prompt reader for format {fmt!r}")
