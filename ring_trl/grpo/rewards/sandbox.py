"""Run untrusted Python (model-written code) in a throw-away subprocess with time, memory and network limits.

Layers, from strongest: a wall-clock deadline enforced by killing the whole process group; rlimits on CPU
time, address space, file size and core dumps; a fresh, empty working directory that is deleted afterwards;
a private network namespace when the kernel allows it (root, or unprivileged user namespaces), and in every
case Python-level socket creation disabled before the code runs. This keeps honest mistakes (infinite
loops, memory blow-ups, stray downloads) contained; it is not a security boundary against hostile code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_BOOT = r"""
import ctypes, resource, socket, sys
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.unshare(CLONE_NEWNET) != 0:
        _libc.unshare(CLONE_NEWUSER | CLONE_NEWNET)
except Exception:
    pass
def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in the sandbox")
class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        _no_network()
socket.socket = _NoSocket
socket.create_connection = _no_network
socket.socketpair = _no_network
socket.fromfd = _no_network
import _socket
_socket.socket = _NoSocket
memory, cpu, fsize = (int(x) for x in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
del memory, cpu, fsize
sys.argv = ["solution.py"]
with open("solution.py", encoding="utf-8") as _f:
    _code = compile(_f.read(), "solution.py", "exec")
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. `memory_mb` bounds the address space, `output_bytes` the size of stdout/stderr."""

    timeout_s: float = 5.0
    memory_mb: int = 512
    output_bytes: int = 1 << 20


@dataclass(frozen=True)
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _read_capped(path: Path, limit: int) -> str:
    with path.open("rb") as handle:
        return handle.read(limit).decode("utf-8", errors="replace")


def run_python(code: str, stdin: str = "", limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `code` as a script with `stdin`; returns its output, exit code and whether it was killed for time."""
    limits = limits or SandboxLimits()
    with tempfile.TemporaryDirectory(prefix="ring-sandbox-") as workdir:
        work = Path(workdir)
        cwd = work / "cwd"
        cwd.mkdir()
        (cwd / "solution.py").write_text(code, encoding="utf-8")
        (work / "stdin.txt").write_text(stdin, encoding="utf-8")
        stdout_path, stderr_path = work / "stdout.txt", work / "stderr.txt"
        cpu_seconds = max(1, int(limits.timeout_s) + 1)
        command = [
            sys.executable,
            "-I",
            "-c",
            _BOOT,
            str(limits.memory_mb << 20),
            str(cpu_seconds),
            str(limits.output_bytes),
        ]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(cwd), "PYTHONHASHSEED": "0"}
        timed_out = False
        with (
            (work / "stdin.txt").open("rb") as stdin_file,
            stdout_path.open("wb") as stdout_file,
            stderr_path.open("wb") as stderr_file,
        ):
            process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=stdin_file,
                stdout=stdout_file,
                stderr=stderr_file,
                start_new_session=True,
            )
            try:
                returncode: int | None = process.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                returncode = None
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # the whole group: children die with it
                process.wait()
        return SandboxResult(
            stdout=_read_capped(stdout_path, limits.output_bytes),
            stderr=_read_capped(stderr_path, limits.output_bytes),
            returncode=returncode,
            timed_out=timed_out,
        )
