"""Code reward: run the answer's last Python block against the row's stdin/stdout test cases in the sandbox.

The sandbox is bubblewrap (docs/sandbox.md). On a host that cannot provide it the reward refuses to run, at
recipe build time (`check_options`) and at call time, unless the recipe names the weaker `sandbox: limits-only`.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ring_trl.grpo.rewards.sandbox import SANDBOX_MODES, SandboxLimits, require_sandbox, run_python
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


def passes(code: str, test: dict[str, str], limits: SandboxLimits, sandbox: str = "bubblewrap") -> bool:
    result = run_python(code, stdin=str(test.get("input", "")), limits=limits, mode=sandbox)
    return result.ok and _normalise_output(result.stdout) == _normalise_output(str(test.get("output", "")))


def code_tests(
    prompts: list,
    completions: list,
    tests: list[list[dict[str, str]] | None] | None = None,
    task: list[str] | None = None,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    all_or_nothing: bool = False,
    sandbox: str = "bubblewrap",
    **_: Any,
) -> list[float | None]:
    """Fraction of test cases passed (or 1/0 with all_or_nothing); None for rows without tests or not "code"."""
    check_options(timeout_s=timeout_s, memory_mb=memory_mb, all_or_nothing=all_or_nothing, sandbox=sandbox)
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
        outcomes = list(pool.map(lambda run: passes(run[1], run[2], limits, sandbox), runs)) if runs else []
    passed: dict[int, int] = {}
    for (i, _code, _test), ok in zip(runs, outcomes, strict=True):
        passed[i] = passed.get(i, 0) + int(ok)
    for i, code, row_tests in jobs:
        fraction = 0.0 if code is None else passed.get(i, 0) / len(row_tests)
        results[i] = float(fraction == 1.0) if all_or_nothing else fraction
    return results


def check_options(
    timeout_s: Any = 5.0,
    memory_mb: Any = 512,
    all_or_nothing: Any = False,
    sandbox: Any = "bubblewrap",
    **extra: Any,
) -> None:
    """Recipe pre-flight for this reward's kwargs: types, and a sandbox that works on this host.
    Raises ValueError (bad option) or SandboxUnavailable (what is missing and how to get it)."""
    if extra:
        raise ValueError(
            f"unknown option(s) {sorted(extra)}; allowed timeout_s, memory_mb, all_or_nothing, sandbox"
        )
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 < timeout_s <= 3600:
        raise ValueError(f"timeout_s must be a number of seconds in (0, 3600], got {timeout_s!r}")
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 32:
        raise ValueError(f"memory_mb must be an integer >= 32, got {memory_mb!r}")
    if not isinstance(all_or_nothing, bool):
        raise ValueError(f"all_or_nothing must be true or false, got {all_or_nothing!r}")
    if sandbox not in SANDBOX_MODES:
        raise ValueError(f"sandbox must be one of {', '.join(SANDBOX_MODES)}, got {sandbox!r}")
    require_sandbox(sandbox)


code_tests.check_options = check_options  # type: ignore[attr-defined]  # found by the recipe builder
