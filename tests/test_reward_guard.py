"""A reward function cannot break training: exits, crashes, memory blow-ups, hangs, stray children, bad values.

The process-isolation tests share one guarded reward (one worker, restarted when a case kills it) loaded from a
reward file that the test writes, as a recipe would name it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from ring_trl.grpo.recipe import RecipeError, load_recipe
from ring_trl.grpo.rewards import GuardedReward, RewardSpec

REWARD_FILE = textwrap.dedent(
    """
    import ctypes, os, subprocess, sys, time

    def _daemon(token):
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", "30", token])
            os._exit(0)
        os.wait()

    def behave(prompts, completions, mode, token=None, **kwargs):
        mode = mode[0]
        if mode == "os_exit":
            os._exit(7)
        if mode == "segfault":
            ctypes.string_at(0)
        if mode == "system_exit":
            sys.exit(3)
        if mode == "keyboard_interrupt":
            raise KeyboardInterrupt
        if mode == "allocate_20gb":
            block = bytearray(20 * 1024**3)
        if mode == "stray":
            _daemon(token[0])
            subprocess.Popen(["sleep", "30", token[0]], start_new_session=True)
        if mode == "hang":
            _daemon(token[0])
            time.sleep(60)
        if mode == "alarm":  # what math-verify does to bound its own time: main thread only
            import signal
            def _on_alarm(signum, frame):
                raise TimeoutError
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            try:
                time.sleep(5)
            except TimeoutError:
                return [0.25 for _ in completions]
        return [float(len(c)) + 0.5 for c in completions]
    """
)


def _token_processes(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                carries = token.encode() in (entry / "cmdline").read_bytes()
                if carries and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
    return found


def _new_token() -> str:
    return f"0.{uuid.uuid4().int % 10**15:015d}"  # GNU sleep adds up its arguments: the token rides along


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def reward_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user-rewards") / "my_rewards.py"
    path.write_text(REWARD_FILE)
    return path


@pytest.fixture(scope="module")
def isolated_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user-rewards") / "isolated_rewards.py"
    path.write_text(REWARD_FILE)
    return path


@pytest.fixture(scope="module")
def isolated(isolated_file: Path) -> Iterator[GuardedReward]:
    reward = GuardedReward(
        RewardSpec(f"{isolated_file}:behave"), timeout_s=3, failure_value=-1.0, isolation="process"
    )
    reward.start()
    yield reward
    reward.close()


def _call(reward: GuardedReward, mode: str, token: str | None = None) -> list[float | None]:
    return reward(prompts=["p", "q"], completions=["a", "bb"], mode=[mode, mode], token=[token, token])


# ------------------------------------------------------------------------------------------ thread mode
@pytest.mark.parametrize("mode", ["system_exit", "keyboard_interrupt"])
def test_thread_mode_contains_system_exit_and_keyboard_interrupt(reward_file: Path, mode: str) -> None:
    reward = GuardedReward(RewardSpec(f"{reward_file}:behave"), timeout_s=None, failure_value=-1.0)
    assert _call(reward, mode) == [-1.0, -1.0]
    assert reward.take_failure_count() == 2
    assert _call(reward, "ok") == [1.5, 2.5]


def _returns(value):
    def reward(prompts, completions, **_):
        return value

    return reward


def test_values_must_be_real_numbers_finite_in_float32() -> None:
    completions = ["a", "b", "c", "d"]
    for whole in ("9999", b"9999", {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}, 7.0, None):
        reward = GuardedReward(_returns(whole), failure_value=0.0)
        assert reward(prompts=[0] * 4, completions=completions) == [0.0] * 4, whole
        assert reward.take_failure_count() == 4, whole
    mixed = [
        1e39,
        "3",
        -1e39,
        Decimal("1.5"),
        None,
        2,
        np.float32(0.25),
        Fraction(1, 4),
        True,
        torch.tensor(0.5),
    ]
    reward = GuardedReward(_returns(mixed), failure_value=-1.0)
    values = reward(prompts=[0] * 10, completions=["x"] * 10)
    assert values == [-1.0, -1.0, -1.0, -1.0, None, 2.0, 0.25, 0.25, 1.0, 0.5]
    assert all(type(v) is float for v in values if v is not None)
    assert reward.take_failure_count() == 4
    as_arrays = GuardedReward(_returns(np.array([1.0, 3.5e38])), failure_value=0.0)
    assert as_arrays(prompts=[0, 0], completions=["x", "y"]) == [1.0, 0.0]
    assert torch.isfinite(torch.tensor([*values[5:9], 0.0], dtype=torch.float32)).all()


def test_guard_settings_are_type_checked() -> None:
    with pytest.raises(ValueError, match="timeout_s must be a positive number of seconds or null, got '30'"):
        GuardedReward(_returns([1.0]), timeout_s="30")
    with pytest.raises(ValueError, match="failure_value must be a number finite in float32"):
        GuardedReward(_returns([1.0]), failure_value=1e39)
    with pytest.raises(ValueError, match="isolation must be one of thread, process, got 'procss'"):
        GuardedReward(_returns([1.0]), isolation="procss")
    with pytest.raises(ValueError, match="memory_mb applies to isolation: process only"):
        GuardedReward(_returns([1.0]), memory_mb=1024)
    with pytest.raises(ValueError, match="isolation: process needs a function importable by name"):
        GuardedReward(_returns([1.0]), isolation="process")  # a closure cannot be found again in a worker


def test_recipe_reward_settings_fail_at_build_time_with_one_line(tmp_path: Path) -> None:
    from ring_trl.grpo.build import build_rewards

    recipe_path = tmp_path / "recipe.yaml"
    base = "model_name_or_path: m\ndataset: d.jsonl\n"
    cases = {
        "reward_timeout_s: '30'\nrewards: [ring_trl.grpo.rewards:think_format]\n": "timeout_s must be",
        "rewards:\n  - {function: ring_trl.grpo.rewards:think_format, isolation: procss}\n": "isolation must be",
        "rewards:\n  - {function: ring_trl.grpo.rewards:code_tests, kwargs: {timeout_s: '6'}}\n": "timeout_s must",
        "rewards:\n  - {function: ring_trl.grpo.rewards:code_tests, kwargs: {sandbox: none}}\n": "sandbox must be",
    }
    for body, message in cases.items():
        recipe_path.write_text(base + body)
        try:
            recipe = load_recipe(recipe_path)
        except RecipeError as error:  # a type check at load time is just as good
            assert "\n" not in str(error)
            continue
        with pytest.raises(RecipeError, match=message) as caught:
            build_rewards(recipe)
        assert "\n" not in str(caught.value) and str(recipe_path) in str(caught.value)


# ----------------------------------------------------------------------------------------- process mode
def test_process_mode_survives_exits_crashes_and_a_20gb_allocation(
    isolated: GuardedReward, isolated_file: Path
) -> None:
    assert _call(isolated, "ok") == [1.5, 2.5]
    assert not any(isolated_file.stem in name for name in sys.modules)  # the file ran in the worker only
    for mode in ("system_exit", "keyboard_interrupt", "allocate_20gb", "os_exit", "segfault"):
        assert _call(isolated, mode) == [-1.0, -1.0], mode
        assert isolated.take_failure_count() == 2, mode
    starts = isolated._runner.worker.starts
    assert _call(isolated, "ok") == [1.5, 2.5]  # a fresh worker after the crash
    assert isolated._runner.worker.starts == starts + 1
    assert isolated.take_failure_count() == 0


def test_process_mode_kills_a_hung_call_with_everything_it_started(isolated: GuardedReward) -> None:
    isolated.start()
    worker_pid = isolated._runner.worker.pid
    token = _new_token()
    try:
        start = time.monotonic()
        assert _call(isolated, "hang", token) == [-1.0, -1.0]
        assert time.monotonic() - start < 10
        assert isolated.take_failure_count() == 2
        assert not _alive(worker_pid)  # no thread or process left running the call
        assert _token_processes(token) == []
        assert _call(isolated, "ok") == [1.5, 2.5]
    finally:
        for pid in _token_processes(token):
            os.kill(pid, signal.SIGKILL)


def test_process_mode_runs_the_function_on_a_main_thread(isolated: GuardedReward, reward_file: Path) -> None:
    assert _call(isolated, "alarm") == [0.25, 0.25]  # SIGALRM-based timeouts work in the worker
    in_thread = GuardedReward(RewardSpec(f"{reward_file}:behave"), failure_value=-1.0)
    assert _call(in_thread, "alarm") == [-1.0, -1.0]  # signal only works in main thread


def test_process_mode_kills_children_left_behind_by_a_call(isolated: GuardedReward) -> None:
    isolated.start()
    worker_pid = isolated._runner.worker.pid
    token = _new_token()
    try:
        assert _call(isolated, "stray", token) == [1.5, 2.5]
        assert isolated.take_failure_count() == 0
        assert _token_processes(token) == []
        assert isolated._runner.worker.pid == worker_pid and _alive(worker_pid)  # the worker itself stays
    finally:
        for pid in _token_processes(token):
            os.kill(pid, signal.SIGKILL)
