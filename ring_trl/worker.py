"""A long-lived worker process that runs one function for its parent, and can always be killed and replaced.

Why a process: a function run in a thread can take the whole program with it (`os._exit`, a segfault, a 20 GB
allocation, a child process left running) and cannot be stopped when it hangs. In a worker it can only end the
worker: the address space is capped (RLIMIT_AS), every process the function leaves behind is killed after each
call (the worker is a child subreaper, so even double-forked daemons come back to it), an overrunning call gets
the worker and everything under it killed, and the next call starts a fresh worker. The function runs on the
worker's main thread, so libraries that time themselves out with SIGALRM (math-verify) work there.

    worker = Worker(functools.partial(load_scorer, "strict"), name="scorer", limits=WorkerLimits(memory_mb=2048))
    worker.start()                                   # optional: surfaces a broken factory early
    value = worker.call(batch, timeout_s=30)         # raises WorkerTimeout / WorkerCrashed / WorkerCallError
    worker.close()

`factory` (a picklable zero-argument callable, e.g. a module-level function or a functools.partial of one)
runs once in each new worker and returns the function to serve. Arguments and results travel pickled. Linux only.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import resource
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class WorkerLimits:
    """`memory_mb` caps the worker's address space (None: no cap); `start_timeout_s` bounds start-up (imports
    and the factory)."""

    memory_mb: int | None = 4096
    start_timeout_s: float = 300.0


class WorkerError(RuntimeError):
    """A call did not produce a result."""


class WorkerStartError(WorkerError):
    """The worker could not be started, or its factory failed."""


class WorkerTimeout(WorkerError):
    """The call overran its deadline; the worker and everything it started were killed."""


class WorkerCrashed(WorkerError):
    """The worker died during the call (os._exit, a signal, the kernel's OOM killer, ...)."""


class WorkerCallError(WorkerError):
    """The function raised (any BaseException, SystemExit and KeyboardInterrupt included), or its arguments or
    result could not be pickled."""


# ------------------------------------------------------------------------------------------- process trees
def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]  # the command name may hold spaces and parentheses
        if state != "Z":  # a zombie has exited already (and has no children left)
            children.setdefault(int(parent), []).append(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    """Every live (not zombie) process below `pid`, from /proc."""
    children = _children_map()
    found: set[int] = set()
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        if child not in found:
            found.add(child)
            stack.extend(children.get(child, []))
    return found


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def kill_descendants(pid: int) -> int:
    """SIGKILL every process below `pid`, freezing them first so that none can fork past the sweep; returns
    how many there were."""
    frozen: set[int] = set()
    while new := descendants(pid) - frozen:
        for victim in new:
            _signal(victim, signal.SIGSTOP)
        frozen |= new
    for victim in frozen:
        _signal(victim, signal.SIGKILL)
    return len(frozen)


def kill_process_tree(pid: int) -> None:
    """SIGKILL `pid` and everything below it (the root is frozen first, then its descendants)."""
    _signal(pid, signal.SIGSTOP)
    kill_descendants(pid)
    _signal(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------------------------- the worker
def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _exit_description(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class Worker:
    """One function served by a replaceable child process. Calls are serialised (one at a time)."""

    def __init__(
        self, factory: Callable[[], Callable[..., Any]], name: str, limits: WorkerLimits | None = None
    ):
        self.factory = factory
        self.name = name
        self.limits = limits or WorkerLimits()
        self.starts = 0
        self._process: subprocess.Popen | None = None
        self._inbox: Connection | None = None  # results from the worker
        self._outbox: Connection | None = None  # calls to the worker
        self._lock = threading.Lock()
        self._owner_pid = os.getpid()  # a forked child inherits this object but must never kill its worker
        self._finalizer = weakref.finalize(self, _shutdown, self.__dict__)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the worker unless it is running; raises WorkerStartError if it cannot serve."""
        with self._lock:
            self._ensure_started()

    def call(self, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        """function(*args, **kwargs) in the worker. On timeout the worker tree is killed (the next call starts
        a new one); on a crash the next call starts a new one too."""
        with self._lock:
            self._ensure_started()
            assert self._outbox is not None and self._inbox is not None
            try:
                self._outbox.send((args, kwargs))
            except (pickle.PicklingError, TypeError, AttributeError) as error:
                raise WorkerCallError(
                    f"the arguments cannot be sent to the worker: {_describe(error)}"
                ) from error
            except OSError as error:
                raise WorkerCrashed(f"worker {self.name} is gone ({self._discard()})") from error
            if not self._inbox.poll(timeout_s):
                self._discard()
                raise WorkerTimeout(
                    f"no result after {timeout_s:g} s; the worker and its children were killed"
                )
            try:
                status, payload, strays = self._inbox.recv()
            except (EOFError, OSError) as error:
                raise WorkerCrashed(f"worker {self.name} died during the call ({self._discard()})") from error
        if strays:
            logger.warning(
                "worker %s: the function left %d child process(es) running; they were killed",
                self.name,
                strays,
            )
        if status != "ok":
            raise WorkerCallError(payload)
        return payload

    def close(self) -> None:
        """Stop the worker and everything it started."""
        with self._lock:
            self._discard()

    # ------------------------------------------------------------------------------------------ internals
    def _ensure_started(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        if self._process is not None:
            self._discard()
        to_worker_read, to_worker_write = os.pipe()
        from_worker_read, from_worker_write = os.pipe()
        memory = str((self.limits.memory_mb or 0) << 20)
        command = [
            sys.executable,
            "-m",
            "ring_trl.worker",
            str(to_worker_read),
            str(from_worker_write),
            memory,
        ]
        try:
            self._process = subprocess.Popen(
                command, pass_fds=(to_worker_read, from_worker_write), stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal reaches the trainer, not the worker
            )  # fmt: skip
        finally:
            os.close(to_worker_read)
            os.close(from_worker_write)
        self._outbox = Connection(to_worker_write, readable=False)
        self._inbox = Connection(from_worker_read, writable=False)
        self.starts += 1
        try:
            self._outbox.send(self.factory)
        except (pickle.PicklingError, TypeError, AttributeError) as error:
            self._discard()
            raise WorkerStartError(
                f"worker {self.name}: the factory cannot be pickled: {_describe(error)}"
            ) from error
        if not self._inbox.poll(self.limits.start_timeout_s):
            self._discard()
            raise WorkerStartError(
                f"worker {self.name} did not start within {self.limits.start_timeout_s:g} s"
            )
        try:
            status, payload, _ = self._inbox.recv()
        except (EOFError, OSError) as error:
            raise WorkerStartError(f"worker {self.name} died while starting ({self._discard()})") from error
        if status != "ready":
            self._discard()
            raise WorkerStartError(f"worker {self.name}: {payload}")

    def _discard(self) -> str:
        """Kill the worker tree, close the pipes, and say how the worker ended."""
        return _shutdown(self.__dict__)


def _shutdown(state: dict[str, Any]) -> str:
    if state.get("_owner_pid", os.getpid()) != os.getpid():
        return "owned by the parent process"  # inherited through fork: the parent's worker, not ours
    process: subprocess.Popen | None = state.get("_process")
    for key in ("_outbox", "_inbox"):
        connection = state.get(key)
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.close()
        state[key] = None
    if process is None:
        return "not started"
    if process.poll() is None:
        kill_process_tree(process.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # anything still in its process group
    process.wait()
    state["_process"] = None
    return _exit_description(process.returncode)


# ----------------------------------------------------------------------------------------- worker side
def _watch_parent(parent: int) -> None:
    """Exit, taking our children along, as soon as the parent is gone (its death reparents us)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        kill_descendants(os.getpid())
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _reap_zombies() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def serve(read_fd: int, write_fd: int, memory_bytes: int) -> int:
    """The worker's main loop: build the function, then answer calls until the parent closes the pipe."""
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphaned grandchildren come back to us, to be killed
    _watch_parent(os.getppid())
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        function = inbox.recv()()
    except BaseException as error:
        outbox.send(("error", f"the factory failed: {_describe(error)}", 0))
        return 1
    outbox.send(("ready", None, 0))
    while True:
        try:
            args, kwargs = inbox.recv()
        except EOFError:
            return 0
        except BaseException as error:
            answer: tuple[str, Any] = ("error", f"the arguments cannot be read: {_describe(error)}")
        else:
            try:
                answer = ("ok", function(*args, **kwargs))
            except BaseException as error:  # SystemExit and KeyboardInterrupt too: the function's, not ours
                answer = ("error", _describe(error))
        strays = kill_descendants(os.getpid())  # nothing the call started outlives it
        _reap_zombies()
        try:
            outbox.send((*answer, strays))
        except (pickle.PicklingError, TypeError, AttributeError, MemoryError) as error:
            outbox.send(("error", f"the result cannot be sent back: {_describe(error)}", strays))


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
