"""Code reward: run the answer's last Python block against the row's stdin/stdout test cases in the sandbox."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ring_trl.grpo.rewards.sandbox import SandboxLimits, run_python
from ring_trl.grpo.rewards.text import completion_text, final_answer

_CODE_BLOCK = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(answer: str | None) -> str | None:
    """The last fenced code block of the answer (```python ...```), or None."""
    if not answer:
        return None
    blocks = _CODE_BLOCK.findall(answer)
    return blocks[-1] if blocks else None


def _normalise_output(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return "\n".join(lines)


def passes(code: str, test: dict[str, str], limits: SandboxLimits) -> bool:
    result = run_python(code, stdin=str(test.get("input", "")), limits=limits)
    return result.ok and _normalise_output(result.stdout) == _normalise_output(str(test.get("output", "")))


def code_tests(
    prompts: list,
    completions: list,
    tests: list[list[dict[str, str]] | None] | None = None,
    task: list[str] | None = None,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    all_or_nothing: bool = False,
    **_: Any,
) -> list[float | None]:
    """Fraction of test cases passed (or 1/0 with all_or_nothing); None for rows without tests or not "code"."""
    limits = SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb)
    jobs: list[tuple[int, str | None, list[dict[str, str]]]] = []
    results: list[float | None] = [None] * len(completions)
    for i, completion in enumerate(completions):
        row_tests = tests[i] if tests is not None else None
        if (task is not None and task[i] not in (None, "code")) or not row_tests:
            continue
        jobs.append((i, extract_code(final_answer(completion_text(completion))), row_tests))
    runs = [(i, code, test) for i, code, row_tests in jobs if code is not None for test in row_tests]
    workers = max(1, min(len(runs), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(lambda run: passes(run[1], run[2], limits), runs)) if runs else []
    passed: dict[int, int] = {}
    for (i, _code, _test), ok in zip(runs, outcomes, strict=True):
        passed[i] = passed.get(i, 0) + int(ok)
    for i, code, row_tests in jobs:
        fraction = 0.0 if code is None else passed.get(i, 0) / len(row_tests)
        results[i] = float(fraction == 1.0) if all_or_nothing else fraction
    return results
