"""Benchmark files people download, read into problems: MATH-500, AIME, GPQA, multiple choice, the kit's RLVR JSONL.

Files: .jsonl, .json (a list of rows, or {"data": [...]}), .parquet, .csv. The layout is recognised from the
first row's keys (case-insensitive); every row is checked, and a bad one stops the run with a one-line error
naming the file and the row.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ring_trl.answers import KINDS
from ring_trl.runtime import UsageError

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = "Answer with the letter of the correct option within \\boxed{}."
ID_KEYS = ("id", "unique_id", "problem_id", "record id", "idx", "question_id")
GPQA_KEYS = ("question", "correct answer", "incorrect answer 1", "incorrect answer 2", "incorrect answer 3")
LAYOUTS = {
    "gpqa": "Question + Correct Answer + Incorrect Answer 1-3 (GPQA; options shuffled with --seed)",
    "choices": "question/problem + choices/options + answer (letter, 0-based index or option text)",
    "rlvr": "prompt (string or messages) + answer [+ answer_type, choices] (the kit's RLVR JSONL, data/eval/)",
    "math": "problem + answer (MATH-500, AIME)",
    "qa": "question + answer (AIME variants; a GSM8K-style '#### 42' answer is cut to 42)",
}
SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass
class Problem:
    id: str
    messages: list[dict[str, str]]
    reference: str
    answer_type: str | None = None
    choices: list[str] | None = None
    where: str = ""  # "file:line 3", for messages about this row
    extra: dict[str, Any] = field(default_factory=dict)


def jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """("file:line N", value) for every non-blank line of a JSONL file; a bad line is a one-line usage error."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield f"{path}:line {number}", json.loads(line)
            except json.JSONDecodeError as error:
                raise UsageError(f"{path}:line {number}: not valid JSON ({error.msg})") from error


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, row) for every row of the file, in order."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from jsonl_rows(path)
        return
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise UsageError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from error
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise UsageError(f"{path}: expected a JSON list of rows (or {{'data': [...]}})")
        for number, row in enumerate(data, start=1):
            yield f"{path}:row {number}", row
        return
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise UsageError(f"{path}: cannot read Parquet ({error})") from error
        for number, row in enumerate(table.to_pylist(), start=1):
            yield f"{path}:row {number}", row
        return
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                yield f"{path}:line {number}", row
        return
    raise UsageError(f"{path}: unsupported file type {path.suffix!r} (use {', '.join(SUFFIXES)})")


def _lower_keys(row: dict[str, Any]) -> dict[str, Any]:
    return {str(k).strip().lower(): v for k, v in row.items()}


def detect_layout(row: dict[str, Any]) -> str | None:
    keys = set(_lower_keys(row))
    if all(k in keys for k in GPQA_KEYS):
        return "gpqa"
    # "prompt" rows are the kit's own layout (the prompt already lists its options); choices ride along
    if (
        "prompt" not in keys
        and keys & {"question", "problem"}
        and keys & {"choices", "options"}
        and "answer" in keys
    ):
        return "choices"
    if "prompt" in keys and "answer" in keys:
        return "rlvr"
    if "problem" in keys and "answer" in keys:
        return "math"
    if "question" in keys and "answer" in keys:
        return "qa"
    return None


def _text(value: Any, where: str, key: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        raise UsageError(f"{where}: no '{key}' value")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if not text:
        raise UsageError(f"{where}: '{key}' is empty")
    return text


def _letter(index: int) -> str:
    return chr(ord("A") + index)


def _options_block(options: list[str]) -> str:
    return "\n".join(f"{_letter(i)}) {option}" for i, option in enumerate(options))


def _user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def _messages(prompt: Any, where: str) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return _user(_text(prompt, where, "prompt"))
    if not isinstance(prompt, list) or not prompt:
        raise UsageError(f"{where}: 'prompt' must be a string or a non-empty list of messages")
    messages = []
    for j, message in enumerate(prompt):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise UsageError(
                f"{where}: prompt[{j}] must be {{'role': system|user|assistant, 'content': str}}"
            )
        if not isinstance(message.get("content"), str):
            raise UsageError(f"{where}: prompt[{j}].content must be a string")
        messages.append({"role": message["role"], "content": message["content"]})
    if messages[-1]["role"] != "user":
        raise UsageError(f"{where}: the prompt's last message must be the user's")
    return messages


def _choice_reference(answer: Any, options: list[str], where: str) -> str:
    """A letter from a letter, a 0-based index, or the text of one option."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < len(options):
            raise UsageError(f"{where}: answer index {answer} is outside the {len(options)} options")
        return _letter(answer)
    text = _text(answer, where, "answer")
    if len(text) == 1 and text.upper().isalpha() and ord(text.upper()) - ord("A") < len(options):
        return text.upper()
    if text.isdigit() and int(text) < len(options):
        return _letter(int(text))
    matches = [i for i, option in enumerate(options) if option.strip() == text]
    if len(matches) == 1:
        return _letter(matches[0])
    raise UsageError(f"{where}: answer {text[:40]!r} is not a letter, an index or the text of one option")


class _CodeTask(Exception):
    """A row graded by running its tests (an RLVR code task), not by its answer: skipped and counted."""


@dataclass
class ProblemFile:
    layout: str
    problems: list[Problem]
    skipped_code_tasks: list[str] = field(default_factory=list)  # where each one was, "file:line 3"


def _problem(layout: str, row: dict[str, Any], where: str, number: int, seed: int) -> Problem:
    keys = _lower_keys(row)
    raw_id = next((keys[k] for k in ID_KEYS if keys.get(k) not in (None, "")), None)
    problem_id = str(raw_id) if raw_id is not None else f"row-{number}"
    if layout == "gpqa":
        correct = _text(keys.get("correct answer"), where, "Correct Answer")
        wrong = [_text(keys.get(f"incorrect answer {i}"), where, f"Incorrect Answer {i}") for i in (1, 2, 3)]
        options = [correct, *wrong]
        random.Random(f"{seed}:{problem_id}").shuffle(options)
        question = _text(keys.get("question"), where, "Question")
        content = f"{question}\n\n{_options_block(options)}"
        reference = _letter(options.index(correct))
        return Problem(problem_id, _user(content), reference, "choice", options, where)
    if layout == "choices":
        raw = keys.get("choices", keys.get("options"))
        if isinstance(raw, dict):
            options = [str(raw[k]) for k in sorted(raw)]
        elif isinstance(raw, list) and raw:
            options = [str(option) for option in raw]
        else:
            raise UsageError(f"{where}: 'choices' must be a non-empty list (or a letter -> text mapping)")
        question = _text(keys.get("question", keys.get("problem")), where, "question")
        reference = _choice_reference(keys.get("answer"), options, where)
        return Problem(
            problem_id, _user(f"{question}\n\n{_options_block(options)}"), reference, "choice", options, where
        )
    answer_type = keys.get("answer_type")
    if answer_type is not None and str(answer_type).strip().lower() not in KINDS:
        raise UsageError(f"{where}: answer_type {answer_type!r} is not one of {', '.join(KINDS)}")
    if keys.get("task") == "code":
        raise _CodeTask(where)
    reference = _text(keys.get("answer"), where, "answer")
    if layout == "qa" and "####" in reference:
        reference = reference.rsplit("####", 1)[1].strip()
    choices = keys.get("choices") if isinstance(keys.get("choices"), list) else None
    if layout == "rlvr":
        messages = _messages(keys.get("prompt"), where)
    else:
        key = "problem" if layout == "math" else "question"
        messages = _user(_text(keys.get(key), where, key))
    return Problem(problem_id, messages, reference, answer_type or None, choices, where)


def _with_instruction(problem: Problem) -> None:
    """Ask for a boxed final answer unless the prompt already says how to answer."""
    last = problem.messages[-1]
    if "boxed" in last["content"].lower():
        return
    instruction = (
        CHOICE_INSTRUCTION if problem.answer_type == "choice" and problem.choices else MATH_INSTRUCTION
    )
    last["content"] = f"{last['content'].rstrip()}\n\n{instruction}"


def load_problems(
    path: str | Path, seed: int = 0, limit: int | None = None, instruction: bool = True
) -> ProblemFile:
    """The layout and the first `limit` problems of a benchmark file.

    Code tasks of an RLVR file (graded by their tests, `code_tests`) are skipped and listed, so the kit's own RLVR
    set can be evaluated as it is."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"data file {path} does not exist")
    layout: str | None = None
    problems: list[Problem] = []
    skipped: list[str] = []
    seen: dict[str, str] = {}
    for number, (where, row) in enumerate(_rows(path), start=1):
        if limit is not None and len(problems) >= limit:
            break
        if not isinstance(row, dict):
            raise UsageError(f"{where}: expected an object with named fields, got {type(row).__name__}")
        if layout is None:
            layout = detect_layout(row)
            if layout is None:
                expected = "; ".join(LAYOUTS.values())
                raise UsageError(
                    f"{where}: unknown layout, keys {sorted(row)[:8]}; expected one of: {expected}"
                )
        try:
            problem = _problem(layout, row, where, number, seed)
        except _CodeTask:
            skipped.append(where)
            continue
        if problem.id in seen:
            raise UsageError(f"{where}: id {problem.id!r} repeats {seen[problem.id]}")
        seen[problem.id] = where
        if instruction:
            _with_instruction(problem)
        problems.append(problem)
    if not problems:
        only_code = f" ({len(skipped)} code tasks, which are graded by their tests)" if skipped else ""
        raise UsageError(f"{path}: no rows that can be graded by their answer{only_code}")
    return ProblemFile(layout or "", problems, skipped)
