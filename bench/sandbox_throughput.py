"""Sandboxed code runs per second: what the `code_tests` reward costs, on this machine's cores.

    python bench/sandbox_throughput.py [--runs 64] [--rounds 5] [--workers 2]

Each run executes a small solution (reads stdin, prints the answer) the way `code_tests` does: `--workers`
threads, one process tree per test case. Three ways to run it are timed in interleaved rounds (A, B, C, A, B,
C, ...) so that background load hits all alike; the medians are reported with their ratio to the bare run:

- bare:        the same `python3 -I solution.py` (from /usr) in a temp dir, no isolation at all (the floor)
- limits-only: the opt-in weaker sandbox (rlimits, clean env, unprivileged user, temp dir)
- bubblewrap:  the default sandbox (namespaces, read-only file system, private tmpfs, rlimits, pidfd kill)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ring_trl.grpo.rewards.sandbox import SandboxLimits, require_sandbox, run_python  # noqa: E402

PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "python3"  # what the sandbox runs
SOLUTION = "n = int(input())\nprint(sum(i * i for i in range(n)))\n"
STDIN = "1000\n"
EXPECTED = str(sum(i * i for i in range(1000)))


def bare_run(code: str, stdin: str, limits: SandboxLimits) -> str:
    with tempfile.TemporaryDirectory(prefix="bare-") as work:
        Path(work, "solution.py").write_text(code)
        done = subprocess.run(
            [PYTHON, "-I", "solution.py"],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=work,
            timeout=limits.timeout_s,
        )
        return done.stdout


def sandboxed(mode: str):
    def run(code: str, stdin: str, limits: SandboxLimits) -> str:
        return run_python(code, stdin=stdin, limits=limits, mode=mode).stdout

    return run


def runs_per_second(runner, runs: int, workers: int) -> float:
    limits = SandboxLimits()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outputs = list(pool.map(lambda _: runner(SOLUTION, STDIN, limits), range(runs)))
    elapsed = time.perf_counter() - start
    wrong = sum(output.strip() != EXPECTED for output in outputs)
    if wrong:
        raise SystemExit(f"{wrong} of {runs} runs gave a wrong answer")
    return runs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=64, help="runs per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians are reported)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="concurrent runs (code_tests)"
    )
    args = parser.parse_args()
    require_sandbox("bubblewrap")
    require_sandbox("limits-only")
    runners = {
        "bare": bare_run,
        "limits-only": sandboxed("limits-only"),
        "bubblewrap": sandboxed("bubblewrap"),
    }
    for runner in runners.values():  # warm-up: page cache, first-call probes
        runs_per_second(runner, 4, args.workers)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, runner in runners.items():
            samples[name].append(runs_per_second(runner, args.runs, args.workers))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(
        f"{args.runs} runs x {args.rounds} rounds, {args.workers} worker thread(s), {os.cpu_count()} CPU(s)"
    )
    for name, value in medians.items():
        spread = f"{min(samples[name]):.1f}-{max(samples[name]):.1f}"
        print(f"  {name:12s} {value:7.1f} runs/s  (range {spread}; {value / medians['bare']:.2f} x bare)")
    per_run_ms = {name: 1000 * args.workers / value for name, value in medians.items()}
    overhead = per_run_ms["bubblewrap"] - per_run_ms["bare"]
    print(
        f"  bubblewrap adds about {overhead:.1f} ms of wall time per run and worker over a bare interpreter"
    )
    print(json.dumps({"runs_per_second": medians, "samples": samples}))


if __name__ == "__main__":
    main()
