"""Parent side of math-verify: one long-lived helper process per process, behind a small interface.

Why a helper process: math-verify's timeouts use SIGALRM (main thread only), and sympy can still hang in C
code where no signal reaches it. The helper is a `ring_trl.worker.Worker` (the same killable worker that runs
isolated reward functions) serving `math_worker.handle` on its own main thread; a request that overruns its
wall-clock deadline gets the helper killed and restarted, costing that one check (undecidable). It is started
as a fresh interpreter (never a fork of the trainer or of a data worker), lazily, once per process (a forked
child notices the pid change and starts its own), and serves every thread of that process one request at a
time. Answers are cached (an LRU of (candidate, reference) pairs), since GRPO groups repeat the same final
answer many times.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from ring_trl.answers.math_worker import load_handler
from ring_trl.worker import Worker, WorkerCallError, WorkerError, WorkerLimits

DEFAULT_TIMEOUT_S = 5
CACHE_SIZE = 65536
HELPER_MEMORY_MB = 4096  # sympy on a pathological expression can grow without bound


@dataclass(frozen=True)
class MathResult:
    """verdict: True/False when decided, None when undecidable (see reason)."""

    verdict: bool | None
    reason: str
    extracted: str | None = None
    key: str | None = None


class MathVerifier(Protocol):
    def verify(self, candidate: str, reference: str) -> MathResult: ...

    def check_reference(self, reference: str) -> MathResult: ...


class MathVerifyWorker:
    """MathVerifier backed by one HelperProcess, safe to share between threads."""

    def __init__(self, timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._helper = Worker(
            load_handler, name="math-verify", limits=WorkerLimits(memory_mb=HELPER_MEMORY_MB)
        )
        self.restarts = 0
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str, str], MathResult] = OrderedDict()

    def _deadline_s(self) -> float:
        # two parses (one retried with $...$) + one verify, each bounded by timeout_s inside the helper
        return 4.0 * self.timeout_s + 5.0

    def _ask(self, op: str, candidate: str, reference: str) -> MathResult:
        key = (op, candidate, reference)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            request = {"op": op, "candidate": candidate, "reference": reference, "timeout_s": self.timeout_s}
            try:
                answer = self._helper.call(request, timeout_s=self._deadline_s())
            except WorkerCallError:  # handle() raised on this request: that request only
                return MathResult(None, "worker_error")
            except WorkerError:  # overran its deadline or died: killed; the next request starts a new one
                self.restarts += 1
                return MathResult(None, "timeout")
            result = MathResult(
                answer.get("verdict"), answer.get("reason", ""), answer.get("extracted"), answer.get("key")
            )
            if result.verdict is not None:  # undecidable answers may depend on load: never cached
                self._cache[key] = result
                if len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
            return result

    def verify(self, candidate: str, reference: str) -> MathResult:
        return self._ask("verify", candidate, reference)

    def check_reference(self, reference: str) -> MathResult:
        return self._ask("reference", "", reference)

    def close(self) -> None:
        with self._lock:
            self._helper.close()


_defaults: dict[tuple[int, int], MathVerifyWorker] = {}
_defaults_lock = threading.Lock()


def default_math_verifier(timeout_s: int = DEFAULT_TIMEOUT_S) -> MathVerifyWorker:
    """This process's shared helper for a timeout (a forked child starts its own, never using its parent's)."""
    key = (os.getpid(), int(timeout_s))
    with _defaults_lock:
        worker = _defaults.get(key)
        if worker is None:
            worker = _defaults[key] = MathVerifyWorker(int(timeout_s))
        return worker


def _close_defaults() -> None:
    for (pid, _), worker in list(_defaults.items()):
        if pid == os.getpid():
            worker.close()


atexit.register(_close_defaults)
