"""Load an RLVR prompt set: the JSONL that `data_prep build-rlvr` writes, or any local JSON/JSONL/Parquet/CSV.

Row contract (JSONL): {"id": str, "source": str, "prompt": [{"role": "user", "content": str}] (optionally a
system message first), "answer": str, "task": "math" | "code", "tests": [{"input": str, "output": str}]}.
Only `prompt` is required by the trainer; rewards read the other columns. Bad rows fail with file:line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Dataset, load_dataset

from data_prep.manifest import check_dataset_file

TASKS = ("math", "code")
ROLES = ("system", "user", "assistant")


class DatasetFormatError(ValueError):
    """A prompt-set row breaks the RLVR contract."""


def _check_prompt(prompt: Any, where: str) -> None:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise DatasetFormatError(f"{where}: 'prompt' is an empty string")
        return
    if not isinstance(prompt, list) or not prompt:
        raise DatasetFormatError(f"{where}: 'prompt' must be a non-empty list of messages or a string")
    for j, message in enumerate(prompt):
        if not isinstance(message, dict):
            raise DatasetFormatError(f"{where}: prompt[{j}] is not an object")
        if message.get("role") not in ROLES:
            raise DatasetFormatError(
                f"{where}: prompt[{j}].role must be one of {ROLES}, got {message.get('role')!r}"
            )
        if not isinstance(message.get("content"), str):
            raise DatasetFormatError(f"{where}: prompt[{j}].content must be a string")
    if prompt[-1]["role"] == "system":
        raise DatasetFormatError(
            f"{where}: prompt ends with a system message; the last message must be the user's"
        )


def check_row(row: Any, where: str) -> dict[str, Any]:
    """Validate one row against the contract; returns it unchanged."""
    if not isinstance(row, dict):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "prompt" not in row:
        raise DatasetFormatError(f"{where}: missing required field 'prompt'")
    _check_prompt(row["prompt"], where)
    for key in ("id", "source", "answer"):
        if key in row and row[key] is not None and not isinstance(row[key], str):
            raise DatasetFormatError(f"{where}: '{key}' must be a string, got {type(row[key]).__name__}")
    task = row.get("task")
    if task is not None and task not in TASKS:
        raise DatasetFormatError(f"{where}: 'task' must be one of {TASKS}, got {task!r}")
    tests = row.get("tests")
    if tests is not None:
        if not isinstance(tests, list):
            raise DatasetFormatError(f"{where}: 'tests' must be a list")
        for j, test in enumerate(tests):
            if not (
                isinstance(test, dict)
                and isinstance(test.get("input"), str)
                and isinstance(test.get("output"), str)
            ):
                raise DatasetFormatError(f"{where}: tests[{j}] must be {{'input': str, 'output': str}}")
    if task == "math" and not isinstance(row.get("answer"), str):
        raise DatasetFormatError(f"{where}: a math row needs a string 'answer'")
    return row


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetFormatError(
                    f"{where}: invalid JSON: {error.msg} (column {error.colno})"
                ) from error
            rows.append(check_row(row, where))
    return rows


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetFormatError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from error
    if not isinstance(data, list):
        raise DatasetFormatError(f"{path}: expected a JSON list of rows")
    return [check_row(row, f"{path}: row {i}") for i, row in enumerate(data)]


def load_prompt_dataset(path: str | Path, max_samples: int | None = None) -> Dataset:
    """Read and validate a local prompt set."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    unfinished = check_dataset_file(path)  # a data_prep publish that was cut short, or edited since
    if unfinished:
        raise DatasetFormatError(unfinished)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = _read_jsonl(path)
    elif suffix == ".json":
        rows = _read_json(path)
    elif suffix in (".parquet", ".csv"):
        dataset = load_dataset(suffix[1:], data_files=str(path), split="train")
        if "prompt" not in dataset.column_names:
            raise DatasetFormatError(f"{path}: no 'prompt' column (columns: {dataset.column_names})")
        rows = [check_row(row, f"{path}: row {i}") for i, row in enumerate(dataset)]
    else:
        raise DatasetFormatError(
            f"{path}: unsupported extension {suffix!r} (use .jsonl, .json, .parquet, .csv)"
        )
    if not rows:
        raise DatasetFormatError(f"{path}: no rows")
    if max_samples is not None:
        rows = rows[:max_samples]
    # Dataset.from_list takes its columns from the first row: give every row every column (None when absent),
    # so a math row first does not drop the `tests` of the code rows after it.
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return Dataset.from_list([{key: row.get(key) for key in columns} for row in rows])
