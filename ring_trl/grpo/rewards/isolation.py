"""Run a picklable-result function in a forked child with a hard deadline.

Used by rewards whose libraries rely on SIGALRM (math-verify) or that may hang: the child is its own main
thread, so signal-based timeouts work there even when the trainer calls rewards from a worker thread, and
the parent can always kill it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any


class ChildTimeout(Exception):
    """The child did not answer before its deadline and was killed."""


def _child(conn: Any, fn: Callable[..., Any], args: tuple) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as error:
        conn.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        conn.close()


def run_forked(fn: Callable[..., Any], args: tuple, timeout_s: float) -> Any:
    """fn(*args) in a forked process; raises ChildTimeout or RuntimeError (child error) on failure."""
    context = multiprocessing.get_context("fork")
    parent_conn, child_conn = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(child_conn, fn, args), daemon=True)
    process.start()
    child_conn.close()
    try:
        if not parent_conn.poll(timeout_s):
            raise ChildTimeout(f"no answer after {timeout_s:g} s")
        try:
            status, payload = parent_conn.recv()
        except EOFError as error:
            raise RuntimeError(f"child exited without an answer (exit code {process.exitcode})") from error
    finally:
        parent_conn.close()
        if process.is_alive():
            process.kill()
        process.join()
    if status != "ok":
        raise RuntimeError(payload)
    return payload
