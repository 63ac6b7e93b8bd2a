"""The code sandbox holds against hostile code: each test runs one escape from issue 11 and checks nothing got out.

Every target is something the test itself makes: a loopback listener, files in a temp folder, a marker name in
the repository root, a stand-in "trainer" process with a secret in its environment. Forks are bounded and
sleeping processes carry a unique token so that a broken sandbox cannot leave anything behind for long.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ring_trl.grpo.rewards import code_tests
from ring_trl.grpo.rewards import sandbox as sandbox_module
from ring_trl.grpo.rewards.sandbox import SandboxLimits, SandboxUnavailable, run_python

SANDBOX_FILE = Path(sandbox_module.__file__)

# Tries to join the network namespace of the parent and of every process it can see (root can, without a
# user namespace of its own), then reports which attempts succeeded.
JOIN_HOST_NETWORK = textwrap.dedent(
    """
    import ctypes, os
    _libc = ctypes.CDLL(None, use_errno=True)
    _mine = os.stat("/proc/self/ns/net").st_ino
    for _pid in {os.getppid(), *(int(p) for p in os.listdir("/proc") if p.isdigit())}:
        try:
            _fd = os.open(f"/proc/{_pid}/ns/net", os.O_RDONLY)
        except OSError:
            continue
        if os.fstat(_fd).st_ino != _mine and _libc.setns(_fd, 0x40000000) == 0:
            print("JOINED", _pid, flush=True)
            break
        os.close(_fd)
    """
)


class Listener:
    """A loopback TCP server that counts the connections it accepts."""

    def __init__(self) -> None:
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.server.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    server = Listener()
    socket.create_connection(("127.0.0.1", server.port), timeout=2).close()  # reachable from outside
    deadline = time.monotonic() + 2
    while server.accepted == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.accepted == 1
    yield server
    server.close()


def _settle(listener: Listener, before: int) -> int:
    time.sleep(0.3)  # a connection made just before the sandbox ended is accepted by now
    return listener.accepted - before


def _token_processes(token: str) -> list[int]:
    """Live (non-zombie) processes anywhere on the host whose command line carries `token`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if token.encode() in (entry / "cmdline").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def _kill_leftovers(token: str) -> None:
    for pid in _token_processes(token):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _leftovers_after(token: str, grace_s: float = 2.0) -> list[int]:
    deadline = time.monotonic() + grace_s
    while (left := _token_processes(token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# ------------------------------------------------------------------------------------------------- network
def test_python_sockets_reach_nothing(listener: Listener) -> None:
    code = JOIN_HOST_NETWORK + textwrap.dedent(
        f"""
        import socket, _socket
        attempts = {{
            "socket.socket": lambda: socket.socket(),
            "socket.SocketType": lambda: socket.SocketType(socket.AF_INET, socket.SOCK_STREAM),
            "_socket.socket": lambda: _socket.socket(),
        }}
        for name, make in attempts.items():
            try:
                s = make(); s.settimeout(2); s.connect(("127.0.0.1", {listener.port}))
                print("CONNECTED", name, flush=True)
            except OSError as error:
                print("blocked", name, error, flush=True)
        try:
            socket.create_connection(("127.0.0.1", {listener.port}), timeout=2)
            print("CONNECTED create_connection", flush=True)
        except OSError as error:
            print("blocked create_connection", error, flush=True)
        """
    )
    before = listener.accepted
    result = run_python(code)
    assert "blocked socket.SocketType" in result.stdout, result  # the code ran to the end
    assert "JOINED" not in result.stdout and "CONNECTED" not in result.stdout, result.stdout
    assert _settle(listener, before) == 0


CHILD_ROUTES = {
    "python3": "['python3', '-c', "
    '\'import socket; socket.create_connection(("127.0.0.1", {port}), timeout=2); print("CONNECTED")\']',
    "bash /dev/tcp": "['bash', '-c', 'exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED']",
    "curl": "['curl', '-sS', '--max-time', '2', 'http://127.0.0.1:{port}/']",
}


@pytest.mark.parametrize("route", list(CHILD_ROUTES))
def test_child_programs_reach_nothing(listener: Listener, route: str) -> None:
    program = route.split()[0]
    if shutil.which(program) is None and program != "python3":
        pytest.skip(f"{program} is not installed on this host")
    command = CHILD_ROUTES[route].format(port=listener.port)
    code = JOIN_HOST_NETWORK + textwrap.dedent(
        f"""
        import subprocess, sys
        done = subprocess.run({command}, capture_output=True, text=True, timeout=4)
        print(done.stdout, done.stderr, "exit", done.returncode, flush=True)
        """
    )
    before = listener.accepted
    result = run_python(code, limits=SandboxLimits(timeout_s=8))
    assert "exit" in result.stdout, result  # the child really ran
    assert "JOINED" not in result.stdout and "CONNECTED" not in result.stdout, result.stdout
    assert _settle(listener, before) == 0


def test_no_capabilities_and_no_way_back_into_the_host_namespaces() -> None:
    code = JOIN_HOST_NETWORK + textwrap.dedent(
        """
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        print("CapEff", status["CapEff"].strip(), "CapBnd", status["CapBnd"].strip(), flush=True)
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        print("unshare-user", libc.unshare(0x10000000), flush=True)  # a nested user namespace would re-grant caps
        """
    )
    result = run_python(code)
    assert "JOINED" not in result.stdout, result.stdout
    assert "CapEff 0000000000000000 CapBnd 0000000000000000" in result.stdout, result.stdout
    assert "unshare-user -1" in result.stdout, result.stdout


# ---------------------------------------------------------------------------------- the trainer's process
STAND_IN_TRAINER = textwrap.dedent(
    """
    import importlib.util, json, os, sys
    spec = importlib.util.spec_from_file_location("sandbox_under_test", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    results = {"trainer_pid": os.getpid()}
    for name, code in json.loads(sys.stdin.read()).items():
        outcome = module.run_python(code)
        results[name] = outcome.stdout + outcome.stderr
    print(json.dumps(results))
    print("TRAINER ALIVE")
    """
)

TRAINER_ATTACKS = {
    "environ": textwrap.dedent(
        """
        import os
        print(os.environ)
        for pid in {os.getppid(), 1, *(p for p in os.listdir("/proc") if p.isdigit())}:
            try:
                print(pid, open(f"/proc/{pid}/environ", "rb").read())
            except OSError as error:
                print(pid, "unreadable", error)
        """
    ),
    "mem": textwrap.dedent(
        """
        import os
        try:
            open(f"/proc/{os.getppid()}/mem", "r+b")
            print("MEM OPENED READ-WRITE")
        except OSError as error:
            print("refused", error)
        print("visible pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
        """
    ),
    "kill": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('sent')\n",
}


def test_the_trainer_is_out_of_reach(tmp_path: Path) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    done = subprocess.run(
        [sys.executable, "-c", STAND_IN_TRAINER, str(SANDBOX_FILE)],
        input=json.dumps(TRAINER_ATTACKS),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RING_TEST_API_KEY": secret},
    )
    assert done.returncode == 0 and "TRAINER ALIVE" in done.stdout, (done.returncode, done.stderr[-2000:])
    assert secret not in done.stdout
    results = json.loads(done.stdout.splitlines()[0])
    assert "environ(" in results["environ"], results["environ"]  # the attack ran
    assert "MEM OPENED" not in results["mem"] and "refused" in results["mem"], results["mem"]
    visible = json.loads(results["mem"].split("visible pids")[1].strip().splitlines()[0])
    assert results["trainer_pid"] not in visible and max(visible) < 10, visible  # its own PID namespace


# ------------------------------------------------------------------------------------------------- files
def test_nothing_outside_the_private_tmp_is_writable(tmp_path: Path, repo_root: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    victim.chmod(0o666)
    tmp_path.chmod(0o777)
    marker = f"sandbox-escape-{uuid.uuid4().hex}.txt"
    code = textwrap.dedent(
        f"""
        import os
        for target in [{str(victim)!r}, {str(tmp_path / marker)!r}, {str(repo_root / marker)!r},
                       os.path.join(os.getcwd(), "mine.txt")]:
            try:
                with open(target, "w") as handle:
                    handle.write("overwritten")
                print("WROTE", target)
            except OSError as error:
                print("refused", target, error.strerror)
        for line in open("/proc/self/mountinfo"):
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if "rw" in fields[5].split(",") and fstype not in ("proc", "devtmpfs", "devpts"):
                print("RW MOUNT", fields[4], fstype)
        """
    )
    try:
        result = run_python(code)
        assert victim.read_text() == "original"
        assert not (tmp_path / marker).exists() and not (repo_root / marker).exists()
        assert "refused" in result.stdout, result
        assert result.stdout.count("WROTE") == 1 and "WROTE /tmp/mine.txt" in result.stdout, result.stdout
        rw_mounts = [line.split()[2] for line in result.stdout.splitlines() if line.startswith("RW MOUNT")]
        assert rw_mounts == ["/tmp"], result.stdout
    finally:
        (repo_root / marker).unlink(missing_ok=True)


def test_each_run_gets_a_fresh_private_tmp() -> None:
    first = run_python("open('left_behind.txt', 'w').write('x')\nprint('written')\n")
    second = run_python("import os\nprint(sorted(os.listdir('.')))\n")
    assert first.ok and second.ok, (first, second)
    assert "left_behind.txt" not in second.stdout and "solution.py" in second.stdout


# --------------------------------------------------------------------------------------------- processes
def test_daemons_do_not_outlive_the_run() -> None:
    token = f"ring-daemon-{uuid.uuid4().hex}"
    code = textwrap.dedent(
        f"""
        import os, subprocess, sys
        sleeper = ["python3", "-c", "import time; time.sleep(20)", {token!r}]
        subprocess.Popen(sleeper, start_new_session=True)        # a setsid child
        if os.fork() == 0:                                       # a classic double-forked daemon
            os.setsid()
            if os.fork() == 0:
                os.execvp("python3", sleeper)
            os._exit(0)
        os.wait()
        print("daemons started", flush=True)
        """
    )
    try:
        result = run_python(code, limits=SandboxLimits(timeout_s=5))
        assert result.ok and "daemons started" in result.stdout, result
        assert _leftovers_after(token) == []
    finally:
        _kill_leftovers(token)


def test_a_fork_bomb_is_bounded_and_cleaned_up() -> None:
    token = f"0.{uuid.uuid4().int % 10**15:015d}"  # GNU sleep adds its arguments: the token rides along
    limits = SandboxLimits(timeout_s=2, max_processes=12)
    code = textwrap.dedent(
        f"""
        import os, time
        started = 0
        for _ in range(200):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                os.setsid()
                os.execvp("sleep", ["sleep", "15", {token!r}])
            started += 1
            print("forked", started, flush=True)
        print("stopped at", started, flush=True)
        while True:
            time.sleep(1)
        """
    )
    try:
        result = run_python(code, limits=limits)
        forked = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("forked")]
        assert result.timed_out, result
        assert forked and max(forked) < limits.max_processes, result.stdout[-500:]
        assert _leftovers_after(token) == []
    finally:
        _kill_leftovers(token)


def test_threads_count_against_the_process_limit() -> None:
    code = textwrap.dedent(
        """
        import threading, time
        threads = []
        try:
            for _ in range(100):
                thread = threading.Thread(target=time.sleep, args=(0.5,))
                thread.start()
                threads.append(thread)
        except RuntimeError as error:
            print("refused", error)
        print("threads", len(threads))
        """
    )
    result = run_python(code, limits=SandboxLimits(max_processes=10))
    assert "refused" in result.stdout, result
    assert int(result.stdout.split("threads")[1].split()[0]) < 10


# ---------------------------------------------------------------------------------------------- limits
def test_limits_on_time_memory_file_size_and_output() -> None:
    start = time.monotonic()
    loop = run_python("while True:\n    pass\n", limits=SandboxLimits(timeout_s=1.0))
    assert loop.timed_out and not loop.ok and time.monotonic() - start < 5
    memory = run_python(
        "x = bytearray(3 * 1024**3)\nprint('allocated')\n", limits=SandboxLimits(memory_mb=256)
    )
    assert "MemoryError" in memory.stderr and "allocated" not in memory.stdout
    limits = SandboxLimits(output_bytes=64 * 1024)
    big_file = run_python("open('big.bin', 'wb').write(b'x' * 10**6)\nprint('written')\n", limits=limits)
    assert not big_file.ok and "written" not in big_file.stdout
    chatty = run_python("import sys\nsys.stdout.write('y' * 10**6)\nsys.stdout.flush()\n", limits=limits)
    assert not chatty.ok and len(chatty.stdout) <= limits.output_bytes


# ------------------------------------------------------------------------------------- availability
def test_code_tests_refuses_without_bubblewrap_unless_the_recipe_opts_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tmp_path = Path(tempfile.mkdtemp(prefix="ring-no-bwrap-"))
    tmp_path.chmod(0o755)  # the sandbox starts bwrap as an unprivileged user
    monkeypatch.setattr(sandbox_module, "BWRAP_SEARCH_PATH", str(tmp_path))  # a host without bwrap
    sandbox_module.sandbox_problem.cache_clear()
    good = "Echo.\n</think>\n\n```python\nprint(input())\n```"
    tests = [[{"input": "hi\n", "output": "hi\n"}]]
    try:
        with pytest.raises(
            SandboxUnavailable, match=r"bubblewrap \(bwrap\) is not installed.*apt-get install"
        ):
            code_tests([None], [good], tests=tests)
        assert code_tests([None], [good], tests=tests, sandbox="limits-only") == [1.0]
        fake = tmp_path / "bwrap"  # a bwrap that the kernel refuses namespaces to
        fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        sandbox_module.sandbox_problem.cache_clear()
        with pytest.raises(
            SandboxUnavailable, match=r"No permissions to create new namespace.*user namespaces"
        ):
            code_tests([None], [good], tests=tests)
    finally:
        sandbox_module.sandbox_problem.cache_clear()
        shutil.rmtree(tmp_path)
