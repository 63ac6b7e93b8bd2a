"""GuardedReward: a reward function that cannot kill the run.

A user reward that raises, hangs, returns the wrong number of values, or returns NaN/inf costs one batch of
rewards (replaced by `failure_value`), a log line, and a count in the `rewards/<name>/failures` metric.
`None` is passed through: TRL reads it as "this reward does not apply to this sample".
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

RewardFn = Callable[..., list[float | None]]


class RewardTimeout(Exception):
    """The reward function did not return within its time limit."""


def _call_with_deadline(fn: RewardFn, kwargs: dict[str, Any], timeout_s: float | None) -> Any:
    """Call fn(**kwargs); give up after timeout_s. A timed-out call keeps running in a daemon thread (Python
    cannot kill a thread), so rewards that can really hang should do their work in a subprocess (as the
    built-in code and math rewards do)."""
    if timeout_s is None:
        return fn(**kwargs)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(**kwargs)
        except BaseException as error:
            box["error"] = error

    worker = threading.Thread(target=target, name=f"reward-{getattr(fn, '__name__', 'fn')}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise RewardTimeout(f"no result after {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class GuardedReward:
    """Wraps a TRL reward function `f(prompts, completions, completion_ids, **columns)`."""

    def __init__(
        self,
        fn: RewardFn,
        name: str | None = None,
        timeout_s: float | None = 60.0,
        failure_value: float | None = 0.0,
    ) -> None:
        self.fn = fn
        self.__name__ = name or getattr(fn, "__name__", type(fn).__name__)
        self.timeout_s = timeout_s
        self.failure_value = failure_value
        self._failures = 0
        self._lock = threading.Lock()

    def take_failure_count(self) -> int:
        """Failures (samples given `failure_value`) since the last call."""
        with self._lock:
            count, self._failures = self._failures, 0
        return count

    def _fail(self, count: int, reason: str) -> None:
        with self._lock:
            self._failures += count
        logger.warning("reward %s failed on %d sample(s): %s", self.__name__, count, reason)

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        expected = len(completions)
        try:
            values = _call_with_deadline(
                self.fn, {"prompts": prompts, "completions": completions, **kwargs}, self.timeout_s
            )
            values = list(values)
        except Exception as error:
            self._fail(expected, f"{type(error).__name__}: {error}")
            return [self.failure_value] * expected
        if len(values) != expected:
            self._fail(expected, f"returned {len(values)} values for {expected} completions")
            return [self.failure_value] * expected
        cleaned: list[float | None] = []
        bad = 0
        for value in values:
            if value is None:
                cleaned.append(None)
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if math.isfinite(number):
                cleaned.append(number)
            else:
                bad += 1
                cleaned.append(self.failure_value)
        if bad:
            self._fail(bad, "returned NaN, inf or a non-number")
        return cleaned
