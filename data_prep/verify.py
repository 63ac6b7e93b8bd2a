"""Answer checking with math-verify, bounded in time per row and safe off the main thread.

math-verify enforces its timeouts with SIGALRM, which Python only allows in the main thread. In the main
thread of any process (including our worker processes) we use those timeouts directly; from any other thread
the check is shipped to a one-process helper pool whose main thread can use them, with a wall-clock
backstop on the future.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

_MAX_FREE_SYMBOLS = 3
_helper: ProcessPoolExecutor | None = None
_helper_lock = threading.Lock()


def _wrap_reference(reference: str) -> str:
    text = reference.strip()
    return text if "$" in text or "\\boxed" in text else f"${text}$"


def _check_in_main_thread(candidate: str, reference: str, timeout_s: int) -> bool | None:
    """True/False when decided, None when the reference cannot be parsed or a step timed out."""
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    try:
        gold = parse(_wrap_reference(reference), parsing_timeout=timeout_s)
        if not gold:
            return None
        pred = parse(candidate, parsing_timeout=timeout_s)
        if not pred:
            return False
        return bool(verify(gold, pred, timeout_seconds=timeout_s))
    except TimeoutException:
        return None
    except Exception:  # math-verify raises assorted sympy errors on odd input: undecidable, not fatal
        return None


def _reference_parses_in_main_thread(reference: str, timeout_s: int) -> bool:
    from math_verify import parse
    from math_verify.errors import TimeoutException

    try:
        parsed = parse(_wrap_reference(reference), parsing_timeout=timeout_s)
    except TimeoutException:
        return False
    except Exception:
        return False
    # parse() always returns the raw string last; a usable reference also has a math object first. Prose
    # is parsed as a product of one-letter symbols, so many free symbols means "not a math answer".
    if len(parsed) < 2:
        return False
    free = getattr(parsed[0], "free_symbols", ())
    return len(free) <= _MAX_FREE_SYMBOLS


def _helper_pool() -> ProcessPoolExecutor:
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return _helper


def _run(func, *args, timeout_s: int):  # type: ignore[no-untyped-def]
    if threading.current_thread() is threading.main_thread():
        return func(*args, timeout_s)
    global _helper
    pool = _helper_pool()
    try:
        return pool.submit(func, *args, timeout_s).result(timeout=3 * timeout_s + 30)
    except FutureTimeout:
        return None
    except BrokenProcessPool:  # the helper died (killed, out of memory): start a fresh one next time
        with _helper_lock:
            if _helper is pool:
                _helper = None
        return None


def answers_match(candidate: str, reference: str, timeout_s: int = 5) -> bool | None:
    """Does the candidate answer equal the reference? None = undecidable (unparseable reference or timeout)."""
    return _run(_check_in_main_thread, candidate, reference, timeout_s=timeout_s)


def reference_is_verifiable(reference: str, timeout_s: int = 5) -> bool:
    """Can math-verify parse this reference answer (so an RLVR reward can be computed from it)?"""
    return bool(_run(_reference_parses_in_main_thread, reference, timeout_s=timeout_s))
