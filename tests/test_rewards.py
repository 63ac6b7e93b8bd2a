"""Built-in rewards, reward containment basics (raise / hang / NaN) and reward loading.

The sandbox's escape tests are in tests/test_sandbox.py, the guard's isolation tests in tests/test_reward_guard.py.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest

from ring_trl.grpo.rewards import (
    GuardedReward,
    RewardLoadError,
    bind_reward_options,
    code_tests,
    load_reward_function,
    math_answer,
    overlong_penalty,
    think_format,
)


def _chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


# ----------------------------------------------------------------------------------------------- format
@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("Add them.\n</think>\n\n12", 1.0),
        ("<think>Add them.</think>12", 1.0),  # the block opened again by the model itself
        ("Add them.\n</think>\n\n   ", 0.0),  # empty answer
        ("\n</think>12", 0.0),  # empty reasoning
        ("Add them. 12", 0.0),  # block never closed
        ("a</think>b</think>12", 0.0),  # two closes
        ("a</think><think>b</think>12", 0.0),  # a second block
        ("a<think>b</think>12", 0.0),  # stray opening inside
    ],
)
def test_think_format(completion: str, expected: float) -> None:
    assert think_format([None], [completion]) == [expected]
    assert think_format([None], [_chat(completion)]) == [expected]


# ------------------------------------------------------------------------------------------------ overlong
def test_overlong_penalty_ramp() -> None:
    ids = [[0] * n for n in (10, 16, 20, 24, 25)]
    scores = overlong_penalty([None] * 5, [""] * 5, completion_ids=ids, max_length=24, cache_length=8)
    assert scores == [0.0, 0.0, -0.5, -1.0, -1.0]
    with pytest.raises(ValueError, match="cache_length"):
        overlong_penalty([None], [""], completion_ids=[[0]], max_length=4, cache_length=8)


# ---------------------------------------------------------------------------------------------------- math
def test_math_answer_scores_the_final_answer_only() -> None:
    completions = [
        "3 + 4 = 7\n</think>\n\nThe answer is $\\boxed{7}$.",
        "maybe 7?\n</think>\n\n8",
        "the answer is 7",  # never left the reasoning block: no answer
        "</think>\\frac{14}{2}",
        "x\n</think>\n\n7",
    ]
    scores = math_answer(
        [None] * 5,
        completions,
        answer=["7", "7", "7", "7", "7"],
        task=["math", "math", "math", "math", "code"],
    )
    assert scores == [1.0, 0.0, 0.0, 1.0, None]


def test_math_answer_works_from_a_worker_thread() -> None:
    results: dict[str, object] = {}

    def worker() -> None:
        try:
            results["scores"] = math_answer([None, None], ["a</think>42", "b</think>41"], answer=["42", "42"])
        except Exception as error:
            results["error"] = error

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(60)
    assert "error" not in results, results.get("error")
    assert results["scores"] == [1.0, 0.0]


# ------------------------------------------------------------------------------------------------- guard
def _raises(prompts, completions, **_):
    raise RuntimeError("bug in user reward")


def _hangs(prompts, completions, **_):
    time.sleep(30)
    return [1.0] * len(completions)


def _nan_and_none(prompts, completions, **_):
    return [1.0, math.nan, None, float("inf")]


def _wrong_length(prompts, completions, **_):
    return [1.0]


def test_guard_contains_a_raising_reward(caplog: pytest.LogCaptureFixture) -> None:
    guarded = GuardedReward(_raises, failure_value=-0.5)
    assert guarded(prompts=[1, 2], completions=["a", "b"]) == [-0.5, -0.5]
    assert guarded.take_failure_count() == 2
    assert guarded.take_failure_count() == 0
    assert "bug in user reward" in caplog.text


def test_guard_contains_a_hanging_reward() -> None:
    guarded = GuardedReward(_hangs, timeout_s=0.5)
    start = time.monotonic()
    assert guarded(prompts=[1, 2, 3], completions=["a", "b", "c"]) == [0.0, 0.0, 0.0]
    assert time.monotonic() - start < 5
    assert guarded.take_failure_count() == 3


def test_guard_replaces_nan_keeps_none_and_checks_length() -> None:
    guarded = GuardedReward(_nan_and_none, failure_value=0.0)
    assert guarded(prompts=[0] * 4, completions=["a"] * 4) == [1.0, 0.0, None, 0.0]
    assert guarded.take_failure_count() == 2
    short = GuardedReward(_wrong_length)
    assert short(prompts=[0, 0], completions=["a", "b"]) == [0.0, 0.0]
    assert short.take_failure_count() == 2
    assert GuardedReward(_hangs).__name__ == "_hangs"


# -------------------------------------------------------------------- code tests (sandbox: tests/test_sandbox.py)
def test_code_tests_reward_runs_test_cases() -> None:
    good = "Reverse it.\n</think>\n\n```python\nprint(input()[::-1])\n```"
    half = "Echo.\n</think>\n\n```python\nprint(input())\n```"
    loop = "Oops.\n</think>\n\n```python\nwhile True: pass\n```"
    tests = [{"input": "abc\n", "output": "cba\n"}, {"input": "aa\n", "output": "aa"}]
    scores = code_tests(
        [None] * 5,
        [good, half, loop, "no code</think>sorry", good],
        tests=[tests, tests, tests, tests, []],
        task=["code"] * 5,
        timeout_s=1.0,
    )
    assert scores == [1.0, 0.5, 0.0, 0.0, None]
    strict = code_tests([None], [half], tests=[tests], all_or_nothing=True, timeout_s=2.0)
    assert strict == [0.0]


# ------------------------------------------------------------------------------------------------ loading
def test_load_reward_from_module_path() -> None:
    function = load_reward_function("ring_trl.grpo.rewards:think_format")
    assert function is think_format
    with pytest.raises(RewardLoadError, match="no attribute"):
        load_reward_function("ring_trl.grpo.rewards:nope")
    with pytest.raises(RewardLoadError, match="cannot import"):
        load_reward_function("ring_trl.no_such_module:f")
    with pytest.raises(RewardLoadError, match="expected"):
        load_reward_function("just_a_name")


def test_load_reward_from_file_path_relative_to_recipe(tmp_path: Path) -> None:
    (tmp_path / "rewards").mkdir()
    (tmp_path / "rewards" / "mine.py").write_text(
        "def contains_word(prompts, completions, word='yes', **kwargs):\n"
        "    return [1.0 if word in c else 0.0 for c in completions]\n"
    )
    function = load_reward_function("rewards/mine.py:contains_word", base_dir=tmp_path)
    bound = bind_reward_options(function, {"word": "ok"})
    assert bound(prompts=[0, 0], completions=["ok!", "no"]) == [1.0, 0.0]
    with pytest.raises(RewardLoadError, match="file not found"):
        load_reward_function("rewards/missing.py:f", base_dir=tmp_path)
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(RewardLoadError, match="boom"):
        load_reward_function(str(tmp_path / "broken.py") + ":f")


def test_numeric_closeness_is_graded_and_skips_non_numeric_references() -> None:
    from ring_trl.grpo.rewards import numeric_closeness

    completions = ["so 3+4</think>\n\nThe answer is 7.", "hmm</think>\n\n9", "no digits at all", "</think> 7"]
    scores = numeric_closeness([None] * 4, completions, answer=["7", "7", "7", "x+1"])
    assert scores[0] == 1.0
    assert 0.0 < scores[1] < 1.0  # off by 2: partial credit
    assert scores[2] == 0.0
    assert scores[3] is None  # a symbolic reference is not this reward's business
    closer, farther = numeric_closeness([None] * 2, ["</think> 8", "</think> 20"], answer=["7", "7"])
    assert closer > farther
