"""GuardedReward: a reward function that cannot break the run.

Whatever the function does costs at most one batch of rewards (replaced by `failure_value`), a log line and a
count in the `rewards/<name>/failures` metric. `isolation` (per reward, docs/grpo.md) decides what is contained:

- `thread` (default): the function runs in a helper thread of the trainer. Contained: any exception, SystemExit
  and KeyboardInterrupt included; a hang (the batch fails after `timeout_s`; Python cannot kill a thread, so it
  keeps running in the background). Not contained: `os._exit`, a crash, a memory blow-up, child processes.
- `process`: the function runs in a long-lived worker process (`ring_trl.worker`) with its address space capped
  at `memory_mb`. All of the above is contained as well: an exit or crash costs the batch and the worker is
  started again for the next one, an overrun kills the worker and everything it started, and processes the
  function leaves behind are killed after each call. Arguments and values travel pickled.

Values: one per completion, as a list or tuple (or an array with `tolist()`); each either None (TRL: "does not
apply to this sample", passed through) or a real number that is finite in float32 (the trainer's reward dtype).
Anything else (a string, NaN, 1e39, ...) is a failure for that sample; a result of the wrong type or length
fails the batch.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal

from ring_trl.grpo.rewards.loading import RewardSpec
from ring_trl.worker import Worker, WorkerError, WorkerLimits

logger = logging.getLogger(__name__)

RewardFn = Callable[..., list[float | None]]
Isolation = Literal["thread", "process"]
ISOLATION_MODES: tuple[str, ...] = ("thread", "process")
FLOAT32_MAX = 3.4028234663852886e38
DEFAULT_PROCESS_MEMORY_MB = 4096


class RewardTimeout(Exception):
    """The reward function did not return within its time limit."""


class RewardRaised(Exception):
    """The reward function raised; the message names the original exception."""


# ------------------------------------------------------------------------------------------------- runners
class _ThreadRunner:
    """Runs the function in a fresh daemon thread, so that whatever it raises stays a value here (a SystemExit
    on the caller's thread would end training) and a hang can be abandoned."""

    def __init__(self, fn: RewardFn, name: str) -> None:
        self.fn, self.name = fn, name

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __call__(self, kwargs: dict[str, Any], timeout_s: float | None) -> Any:
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = self.fn(**kwargs)
            except BaseException as error:  # the function's own SystemExit / KeyboardInterrupt too
                box["error"] = error

        worker = threading.Thread(target=target, name=f"reward-{self.name}", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            raise RewardTimeout(
                f"no result after {timeout_s:g} s; its thread cannot be stopped and keeps running "
                "(`isolation: process` kills it)"
            )
        if "error" in box:
            error = box["error"]
            raise RewardRaised(f"{type(error).__name__}: {error}")
        return box["value"]


class _ProcessRunner:
    def __init__(self, factory: Callable[[], RewardFn], name: str, memory_mb: int) -> None:
        self.worker = Worker(factory, name=f"reward-{name}", limits=WorkerLimits(memory_mb=memory_mb))

    def start(self) -> None:
        self.worker.start()

    def close(self) -> None:
        self.worker.close()

    def __call__(self, kwargs: dict[str, Any], timeout_s: float | None) -> Any:
        return self.worker.call(timeout_s=timeout_s, **kwargs)


def _require_importable(fn: RewardFn, name: str) -> None:
    """A worker process finds a plain function again by module and name only."""
    target = getattr(fn, "func", fn)  # functools.partial
    module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", "")
    if module in (None, "__main__") or "<locals>" in qualname:
        raise ValueError(
            f"reward {name}: isolation: process needs a function importable by name (package.module:function) "
            "or a RewardSpec, not one defined in __main__ or inside another function"
        )


def _return(fn: RewardFn) -> RewardFn:
    """A picklable factory for a function importable by name (`functools.partial(_return, fn)`)."""
    return fn


# ---------------------------------------------------------------------------------------------- checking
def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real)


def _check_options(
    name: str, timeout_s: Any, failure_value: Any, isolation: Any, memory_mb: Any
) -> tuple[float | None, float | None]:
    """Types and ranges of the guard's own settings (they come from recipes): ValueError naming the setting."""
    if timeout_s is not None and (
        isinstance(timeout_s, bool) or not _is_number(timeout_s) or not timeout_s > 0
    ):
        raise ValueError(
            f"reward {name}: timeout_s must be a positive number of seconds or null, got {timeout_s!r}"
        )
    if failure_value is not None and _clean_value(failure_value) is None:
        raise ValueError(
            f"reward {name}: failure_value must be a number finite in float32 or null, got {failure_value!r}"
        )
    if isolation not in ISOLATION_MODES:
        raise ValueError(
            f"reward {name}: isolation must be one of {', '.join(ISOLATION_MODES)}, got {isolation!r}"
        )
    if memory_mb is not None:
        if isolation != "process":
            raise ValueError(f"reward {name}: memory_mb applies to isolation: process only")
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 64:
            raise ValueError(f"reward {name}: memory_mb must be an integer >= 64, got {memory_mb!r}")
    return (None if timeout_s is None else float(timeout_s)), (
        None if failure_value is None else float(failure_value)
    )


def _clean_value(value: Any) -> float | None:
    """The value as a float if it is a real number finite in float32, else None."""
    if not _is_number(value) and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()  # a 0-d numpy array or torch tensor
    if not _is_number(value):
        return None
    try:
        number = float(value)
    except (OverflowError, TypeError, ValueError):
        return None
    return number if math.isfinite(number) and abs(number) <= FLOAT32_MAX else None


def _as_list(raw: Any) -> list[Any] | None:
    if isinstance(raw, str | bytes | bytearray | Mapping):
        return None  # iterable, but not a list of values ("9999" is not four rewards)
    if not isinstance(raw, list | tuple) and hasattr(raw, "tolist"):
        raw = raw.tolist()
    return list(raw) if isinstance(raw, list | tuple) else None


# ------------------------------------------------------------------------------------------------- guard
class GuardedReward:
    """Wraps a TRL reward function `f(prompts, completions, completion_ids, **columns)`.

    `fn` is the function, or a `RewardSpec` (how a recipe names it): with `isolation="process"` a spec is
    loaded inside the worker, so a reward file is never imported into the trainer."""

    def __init__(
        self,
        fn: RewardFn | RewardSpec,
        name: str | None = None,
        timeout_s: float | None = 60.0,
        failure_value: float | None = 0.0,
        isolation: Isolation = "thread",
        memory_mb: int | None = None,
    ) -> None:
        if name is None:
            name = fn.name if isinstance(fn, RewardSpec) else getattr(fn, "__name__", type(fn).__name__)
        self.__name__ = name
        self.timeout_s, self.failure_value = _check_options(
            name, timeout_s, failure_value, isolation, memory_mb
        )
        self.isolation = isolation
        self._runner: _ThreadRunner | _ProcessRunner
        if isolation == "process":
            if not isinstance(fn, RewardSpec):
                _require_importable(fn, name)
            factory = fn.load if isinstance(fn, RewardSpec) else functools.partial(_return, fn)
            self._runner = _ProcessRunner(factory, name, memory_mb or DEFAULT_PROCESS_MEMORY_MB)
        else:
            self._runner = _ThreadRunner(fn.load() if isinstance(fn, RewardSpec) else fn, name)
        self._failures = 0
        self._lock = threading.Lock()

    @property
    def fn(self) -> RewardFn | None:
        """The user's function when it runs in this process (thread isolation); None when it lives in a worker."""
        return getattr(self._runner, "fn", None)

    def start(self) -> None:
        """Start the worker now (process isolation), so that a reward that cannot load fails before training."""
        self._runner.start()

    def close(self) -> None:
        self._runner.close()

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
            raw = self._runner({"prompts": prompts, "completions": completions, **kwargs}, self.timeout_s)
        except (RewardTimeout, RewardRaised, WorkerError) as error:
            self._fail(expected, f"{type(error).__name__}: {error}")
            return [self.failure_value] * expected
        values = _as_list(raw)
        if values is None:
            self._fail(expected, f"returned a {type(raw).__name__}, expected a list of numbers")
            return [self.failure_value] * expected
        if len(values) != expected:
            self._fail(expected, f"returned {len(values)} values for {expected} completions")
            return [self.failure_value] * expected
        cleaned: list[float | None] = []
        rejected: list[str] = []
        for value in values:
            number = None if value is None else _clean_value(value)
            if value is not None and number is None:
                rejected.append(repr(value)[:40])
                cleaned.append(self.failure_value)
            else:
                cleaned.append(number)
        if rejected:
            self._fail(
                len(rejected),
                f"returned values that are not numbers finite in float32: {', '.join(rejected[:3])}",
            )
        return cleaned
