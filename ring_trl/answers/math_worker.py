"""What the math-verify helper process runs: `handle(request)`, on the helper's main thread.

math-verify bounds its own work with SIGALRM, which only works on a process's main thread. The helper (a
`ring_trl.worker.Worker` started by `ring_trl.answers.math_runner`) calls `handle` on its main thread, so those
bounds always work there, whichever thread of the trainer, evaluator or data worker asked; the parent adds a
wall-clock deadline and kills the helper if even that is overrun.

Requests: {"op": "verify", "candidate": str, "reference": str, "timeout_s": int}
          {"op": "reference", "reference": str, "timeout_s": int}
Answers:  {"verdict": true | false | null, "reason": str, "extracted": str | null, "key": str | null}
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from itertools import product
from typing import Any


def wrap_reference(reference: str) -> str:
    """math-verify extracts LaTeX between delimiters: a bare reference gets `$...$`."""
    text = reference.strip()
    return text if "$" in text or "\\boxed" in text or "\\(" in text else f"${text}$"


def _math_objects(parsed: list) -> list:
    return [item for item in parsed if not isinstance(item, str)]


def _parse(text: str, timeout_s: int) -> tuple[list, bool]:
    """(parsed items, timed_out). Parser errors count as 'nothing parsed'."""
    from math_verify import parse
    from math_verify.errors import TimeoutException

    try:
        return parse(text, parsing_timeout=timeout_s, raise_on_error=True), False
    except TimeoutException:
        return [], True
    except Exception:
        return [], False


def check_reference(reference: str, timeout_s: int) -> dict[str, Any]:
    gold, timed_out = _parse(wrap_reference(reference), timeout_s)
    if timed_out:
        return {"verdict": None, "reason": "timeout", "extracted": None, "key": None}
    objects = _math_objects(gold)
    if not objects:
        return {"verdict": False, "reason": "unparsable_reference", "extracted": None, "key": None}
    return {"verdict": True, "reason": "ok", "extracted": None, "key": str(objects[0])}


def verify(candidate: str, reference: str, timeout_s: int) -> dict[str, Any]:
    from math_verify import verify as math_verify_equal
    from math_verify.errors import TimeoutException

    gold, timed_out = _parse(wrap_reference(reference), timeout_s)
    if timed_out:
        return {"verdict": None, "reason": "timeout", "extracted": None, "key": None}
    if not _math_objects(gold):
        return {"verdict": None, "reason": "unparsable_reference", "extracted": None, "key": None}
    predicted, timed_out = _parse(candidate, timeout_s)
    if not _math_objects(predicted) and not timed_out and "$" not in candidate and "\\boxed" not in candidate:
        predicted, timed_out = _parse(f"${candidate}$", timeout_s)
    if timed_out:
        return {"verdict": None, "reason": "timeout", "extracted": None, "key": None}
    objects = _math_objects(predicted)
    if not objects:
        return {"verdict": False, "reason": "no_math_answer", "extracted": None, "key": None}
    extracted = next((item for item in reversed(predicted) if isinstance(item, str)), str(objects[0]))
    key = str(objects[0])
    any_timeout = False
    for gold_item, predicted_item in product(_math_objects(gold), objects):
        try:
            if math_verify_equal(gold_item, predicted_item, timeout_seconds=timeout_s, raise_on_error=True):
                return {"verdict": True, "reason": "equal", "extracted": extracted, "key": key}
        except TimeoutException:
            any_timeout = True
        except Exception:  # sympy raises assorted errors on odd pairs: that pair is simply not equal
            continue
    if any_timeout:
        return {"verdict": None, "reason": "timeout", "extracted": extracted, "key": key}
    return {"verdict": False, "reason": "not_equal", "extracted": extracted, "key": key}


def handle(request: dict[str, Any]) -> dict[str, Any]:
    timeout_s = max(1, int(request.get("timeout_s", 5)))
    if request.get("op") == "reference":
        return check_reference(str(request["reference"]), timeout_s)
    if request.get("op") == "verify":
        return verify(str(request["candidate"]), str(request["reference"]), timeout_s)
    raise ValueError(f"unknown op {request.get('op')!r}")


def load_handler() -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The helper's factory: pay math-verify's import once, keep its log chatter out of the trainer's output."""
    import math_verify  # noqa: F401

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return handle
