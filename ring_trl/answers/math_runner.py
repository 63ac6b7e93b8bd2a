"""Parent side of math-verify: one long-lived helper process per process that asks, behind a small interface.

Why a helper process: math-verify's timeouts use SIGALRM (main thread only), and sympy can still hang in C
code where no signal reaches it. The helper (`math_worker.py`) is its own main thread, and a request that
overruns its wall-clock deadline gets the helper killed and restarted, costing that one check (undecidable).
It is started as `python -I math_worker.py` (never a fork of the trainer or of a data worker), lazily, once per process
(a forked child notices the pid change and starts its own), and serves every thread of that process one
request at a time. Answers are cached (an LRU of (candidate, reference) pairs), since GRPO groups repeat
the same final answer many times.

`MathVerifier` is the interface the checker uses; a generic killable worker module can replace
`HelperProcess` underneath without touching the checker.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

DEFAULT_TIMEOUT_S = 5
STARTUP_ALLOWANCE_S = 60.0  # the first request also waits for python + sympy + math-verify imports
CACHE_SIZE = 65536
WORKER_SCRIPT = Path(__file__).resolve().with_name("math_worker.py")


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


class HelperProcess:
    """A JSON-lines child process with a deadline per request; killed and restarted when it overruns."""

    def __init__(self, script: Path) -> None:
        self.script = script
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self.restarts = 0

    def _start(self) -> subprocess.Popen[bytes]:
        self._buffer = b""
        # -I: isolated (no user site, no script folder on sys.path); run as a file so the heavy `ring_trl`
        # package (which imports transformers) is never imported there.
        return subprocess.Popen(
            [sys.executable, "-I", str(self.script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )

    def request(self, payload: dict[str, Any], deadline_s: float) -> dict[str, Any] | None:
        """The helper's answer, or None when it overran the deadline or died (it is then killed)."""
        fresh = self._process is None or self._process.poll() is not None
        if fresh:
            self._process = self._start()
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        allowed = deadline_s + (STARTUP_ALLOWANCE_S if fresh else 0.0)
        try:
            process.stdin.write((json.dumps(payload) + "\n").encode("utf-8"))
            process.stdin.flush()
            line = self._read_line(process, time.monotonic() + allowed)
        except (BrokenPipeError, OSError):
            line = None
        if line is None:
            self.kill()
            self.restarts += 1
            return None
        return json.loads(line)

    def _read_line(self, process: subprocess.Popen[bytes], deadline: float) -> bytes | None:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # the helper died
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        process.wait()

    def close(self) -> None:
        """Ask the helper to exit (stdin closed), then make sure it did."""
        process = self._process
        if process is not None and process.poll() is None and process.stdin is not None:
            try:
                process.stdin.close()
                process.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


class MathVerifyWorker:
    """MathVerifier backed by one HelperProcess, safe to share between threads."""

    def __init__(self, timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._helper = HelperProcess(WORKER_SCRIPT)
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
            payload = {"op": op, "candidate": candidate, "reference": reference, "timeout_s": self.timeout_s}
            answer = self._helper.request(payload, self._deadline_s())
            if answer is None:
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

    @property
    def restarts(self) -> int:
        return self._helper.restarts

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
