"""Run untrusted Python (model-written code) inside a bubblewrap sandbox; see docs/sandbox.md for the threat model.

Each run gets fresh user, PID, network, mount, IPC, UTS and cgroup namespaces (`bwrap --unshare-all`): no
network at all (only the sandbox's own loopback), no view of the trainer's processes, no capabilities, no
nested user namespaces. The file system is read-only (`/usr` and its symlinks only: no repo, no home, no /etc
secrets) except a fresh size-capped tmpfs at /tmp that disappears with the run. The environment is empty but
for PATH/HOME/LANG. `prlimit` bounds CPU seconds, address space, processes/threads, file size (also the size
of stdout/stderr) and open files. The code is the PID namespace's init (`--as-pid-1`): when it exits, or when
the wall-clock deadline has the trainer SIGKILL it through a pidfd, the kernel kills every process it started,
daemons included. Run as root, the sandbox runs as an unprivileged user (nobody) on the host, so the
process limit holds and host files owned by root are out of reach even through a mistake in the mounts.

When bubblewrap cannot work here, `require_sandbox` says what is missing and how to get it. The weaker
`limits-only` mode (rlimits, clean environment, temp working directory, unprivileged user, process-group
kill; no namespaces) runs only when a recipe names it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SANDBOX_MODES: tuple[str, ...] = ("bubblewrap", "limits-only")

BWRAP_SEARCH_PATH = "/usr/bin:/bin:/usr/local/bin"  # where bubblewrap is looked for (not the trainer's PATH)
UNPRIVILEGED_ID = 65534  # "nobody": the host identity of sandboxed code when the trainer runs as root
_SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives")  # what binaries need, no secrets
_TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


class SandboxUnavailable(RuntimeError):
    """This host cannot provide the requested sandbox; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. `memory_mb` bounds each process's address space, `output_bytes` the size of stdout,
    stderr and any file the code writes, `tmp_mb` the whole writable /tmp, `max_processes` processes plus
    threads (the interpreter's own thread counts too)."""

    timeout_s: float = 5.0
    memory_mb: int = 512
    output_bytes: int = 1 << 20
    max_processes: int = 16
    tmp_mb: int = 64
    open_files: int = 256


@dataclass(frozen=True)
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _limits_command(limits: SandboxLimits) -> list[str]:
    cpu_seconds = max(1, int(limits.timeout_s) + 1)
    return [
        "/usr/bin/prlimit",
        f"--cpu={cpu_seconds}",
        f"--as={limits.memory_mb << 20}",
        f"--fsize={limits.output_bytes}",
        f"--nproc={limits.max_processes}",
        f"--nofile={limits.open_files}",
        "--core=0",
        "--",
        "python3",
        "-I",
        "solution.py",
    ]


def _sandbox_env(home: str) -> dict[str, str]:
    return {"PATH": _SANDBOX_PATH, "HOME": home, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}


def _root_layout() -> list[str]:
    """Read-only /usr plus the top-level links into it (merged-/usr systems) or read-only copies of the dirs."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in _TOP_LEVEL_LINKS:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for etc_file in _ETC_FILES:
        args += ["--ro-bind-try", etc_file, etc_file]
    return args


def _bwrap_path() -> str:
    found = shutil.which("bwrap", path=BWRAP_SEARCH_PATH)
    if found is None:
        raise SandboxUnavailable(f"code sandbox unavailable: {_probe_bubblewrap()}")
    return found


def _bwrap_command(limits: SandboxLimits, code_fd: int, info_fd: int) -> list[str]:
    env_args: list[str] = []
    for key, value in _sandbox_env("/tmp").items():
        env_args += ["--setenv", key, value]
    return [
        _bwrap_path(),
        "--unshare-all",  # user (try), pid, net, ipc, uts, cgroup (try)
        "--unshare-user",  # required, not "try": no sandbox without it
        "--disable-userns",  # no nested user namespaces inside
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--as-pid-1",  # the code is the namespace's init: no bwrap helper in there to read or tamper with
        "--new-session",  # no TIOCSTI into the trainer's terminal
        "--hostname",
        "sandbox",
        *_root_layout(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(limits.tmp_mb << 20),
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
        "--file",
        str(code_fd),
        "/tmp/solution.py",
        "--remount-ro",
        "/",
        "--remount-ro",
        "/dev",
        "--chdir",
        "/tmp",
        "--clearenv",
        *env_args,
        "--info-fd",
        str(info_fd),
        "--",
        *_limits_command(limits),
    ]


def _host_identity() -> dict[str, object]:
    """Popen arguments that run the sandbox as an unprivileged host user when we are root (so that the
    process limit applies: the kernel never enforces it for uid 0)."""
    if os.geteuid() != 0:
        return {}
    return {"user": UNPRIVILEGED_ID, "group": UNPRIVILEGED_ID, "extra_groups": []}


def _read_capped(path: Path, limit: int) -> str:
    with path.open("rb") as handle:
        return handle.read(limit).decode("utf-8", errors="replace")


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _open_sandbox_init(info: bytes, bwrap_pid: int) -> int | None:
    """A pidfd for the sandbox's PID-namespace init (bwrap's child), checked to really be bwrap's child.
    Killing it kills every process in the namespace, whatever they did to their signal handling."""
    try:
        child_pid = int(json.loads(info)["child-pid"])
        pidfd = os.pidfd_open(child_pid)
    except (ValueError, KeyError, TypeError, OSError):
        return None
    try:
        status = Path(f"/proc/{child_pid}/status").read_text()
        parent = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
    except (OSError, StopIteration):
        parent = ""
    if parent != str(bwrap_pid):
        os.close(pidfd)
        return None
    return pidfd


def _kill_pidfd(pidfd: int | None) -> None:
    if pidfd is None:
        return
    with contextlib.suppress(ProcessLookupError, OSError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    os.close(pidfd)


def _run(
    command: list[str],
    *,
    work: Path,
    stdin: str,
    limits: SandboxLimits,
    cwd: str,
    env: dict[str, str],
    pass_fds: tuple[int, ...] = (),
    info_pipe: tuple[int, int] | None = None,
) -> SandboxResult:
    """Start `command` with stdin/stdout/stderr in files under `work`, wait up to the deadline, then kill
    everything it started. `info_pipe` is bwrap's --info-fd pipe (read end, write end)."""
    (work / "stdin.txt").write_text(stdin, encoding="utf-8")
    stdout_path, stderr_path = work / "stdout.txt", work / "stderr.txt"
    timed_out = False
    init_pidfd: int | None = None
    with (
        (work / "stdin.txt").open("rb") as stdin_file,
        stdout_path.open("wb") as stdout_file,
        stderr_path.open("wb") as stderr_file,
    ):
        try:
            process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=stdin_file,
                stdout=stdout_file,
                stderr=stderr_file,
                pass_fds=pass_fds,
                start_new_session=True,
                **_host_identity(),  # type: ignore[arg-type]
            )
        finally:
            if info_pipe is not None:
                os.close(info_pipe[1])  # only bwrap holds the write end now: EOF once it has written
        try:
            if info_pipe is not None:
                init_pidfd = _open_sandbox_init(_read_all(info_pipe[0]), process.pid)
            returncode: int | None = process.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            returncode = None
        finally:
            _kill_pidfd(init_pidfd)  # the PID namespace, and everything in it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return SandboxResult(
        stdout=_read_capped(stdout_path, limits.output_bytes),
        stderr=_read_capped(stderr_path, limits.output_bytes),
        returncode=returncode,
        timed_out=timed_out,
    )


def _run_bubblewrap(code: str, stdin: str, limits: SandboxLimits, work: Path) -> SandboxResult:
    code_path = work / "solution.py"
    code_path.write_text(code, encoding="utf-8")
    info_read, info_write = os.pipe()
    write_end_is_ours = True
    try:
        with code_path.open("rb") as code_file:
            command = _bwrap_command(limits, code_file.fileno(), info_write)
            write_end_is_ours = False  # _run closes it right after the start (never twice: fds are reused)
            return _run(
                command,
                work=work,
                stdin=stdin,
                limits=limits,
                cwd="/",
                env={"PATH": "/usr/bin:/bin"},
                pass_fds=(code_file.fileno(), info_write),
                info_pipe=(info_read, info_write),
            )
    finally:
        if write_end_is_ours:
            os.close(info_write)
        os.close(info_read)


def _run_limits_only(code: str, stdin: str, limits: SandboxLimits, work: Path) -> SandboxResult:
    """No namespaces: rlimits, a clean environment, a temp working directory, an unprivileged user when we
    are root, and a process-group kill. Code can still reach the network and read what that user can read."""
    cwd = work / "cwd"
    cwd.mkdir()
    (cwd / "solution.py").write_text(code, encoding="utf-8")
    if os.geteuid() == 0:
        os.chown(cwd, UNPRIVILEGED_ID, UNPRIVILEGED_ID)
        os.chmod(work, 0o755)  # nobody must reach its cwd; the output files stay root's (written via fds)
    return _run(
        _limits_command(limits),
        work=work,
        stdin=stdin,
        limits=limits,
        cwd=str(cwd),
        env=_sandbox_env(str(cwd)),
    )


_RUNNERS = {"bubblewrap": _run_bubblewrap, "limits-only": _run_limits_only}


def run_python(
    code: str, stdin: str = "", limits: SandboxLimits | None = None, mode: str = "bubblewrap"
) -> SandboxResult:
    """Run `code` as a script with `stdin`; returns its output, exit code and whether it was killed for time.
    Raises SandboxUnavailable when this host cannot provide `mode`."""
    require_sandbox(mode)
    limits = limits or SandboxLimits()
    with tempfile.TemporaryDirectory(prefix="ring-sandbox-") as workdir:
        return _RUNNERS[mode](code, stdin, limits, Path(workdir))


# ------------------------------------------------------------------------------------------ availability
_INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; `make setup` does it when run as root)"
)
_OPT_OUT_HINT = (
    "or accept the weaker sandbox by setting `sandbox: limits-only` in this reward's kwargs (docs/sandbox.md)"
)


def _probe_bubblewrap() -> str | None:
    """None when a real sandboxed run works here, else what is missing and how to get it."""
    if shutil.which("bwrap", path=BWRAP_SEARCH_PATH) is None:
        return f"bubblewrap (bwrap) is not installed: {_INSTALL_HINT}, {_OPT_OUT_HINT}"
    if not Path("/usr/bin/prlimit").is_file():
        return f"/usr/bin/prlimit (util-linux) is missing: install util-linux, {_OPT_OUT_HINT}"
    if shutil.which("python3", path=_SANDBOX_PATH) is None:
        return f"no python3 under /usr for the sandbox to run: install python3, {_OPT_OUT_HINT}"
    with tempfile.TemporaryDirectory(prefix="ring-sandbox-probe-") as workdir:
        try:
            result = _run_bubblewrap("print('ok')\n", "", SandboxLimits(timeout_s=20.0), Path(workdir))
        except OSError as error:
            return f"bwrap could not be started ({error}): {_INSTALL_HINT}, {_OPT_OUT_HINT}"
    if result.ok and result.stdout.strip() == "ok":
        return None
    detail = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
    return (
        f"bubblewrap cannot create its namespaces here ({detail}): allow user namespaces "
        "(sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1, on Ubuntu 24.04+ "
        "kernel.apparmor_restrict_unprivileged_userns=0; in Docker run the container with "
        f"--security-opt seccomp=unconfined --security-opt apparmor=unconfined), {_OPT_OUT_HINT}"
    )


def _probe_limits_only() -> str | None:
    if not Path("/usr/bin/prlimit").is_file():
        return "/usr/bin/prlimit (util-linux) is missing: install util-linux"
    if shutil.which("python3", path=_SANDBOX_PATH) is None:
        return "no python3 under /usr for the sandbox to run: install python3"
    return None


@functools.cache
def sandbox_problem(mode: str = "bubblewrap") -> str | None:
    """What keeps `mode` from working on this host (checked once per process), or None."""
    if mode not in SANDBOX_MODES:
        return f"unknown sandbox {mode!r}; choose one of {', '.join(SANDBOX_MODES)}"
    return _probe_bubblewrap() if mode == "bubblewrap" else _probe_limits_only()


def require_sandbox(mode: str = "bubblewrap") -> None:
    """Raise SandboxUnavailable (one line: what is missing and how to get it) unless `mode` works here."""
    problem = sandbox_problem(mode)
    if problem is not None:
        raise SandboxUnavailable(f"code sandbox unavailable: {problem}")
