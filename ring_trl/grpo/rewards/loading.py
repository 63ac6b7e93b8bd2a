"""Resolve reward functions named in a recipe: `package.module:function` or `path/to/file.py:function`."""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class RewardLoadError(ValueError):
    """A reward reference in a recipe could not be resolved."""


def _load_module_from_file(path: Path) -> Any:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"ring_trl_user_reward_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise RewardLoadError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # lets multiprocessing and pickle find the module again
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise RewardLoadError(f"importing {path} failed: {type(error).__name__}: {error}") from error
    return module


def load_reward_function(reference: str, base_dir: Path | None = None) -> Callable[..., Any]:
    """Return the callable named by `reference`. Relative file paths are tried against the current directory,
    then `base_dir` (the recipe's folder)."""
    target, sep, attribute = reference.rpartition(":")
    if not sep or not target or not attribute:
        raise RewardLoadError(
            f"reward {reference!r}: expected 'package.module:function' or 'path/to/file.py:function'"
        )
    if target.endswith(".py") or "/" in target or "\\" in target:
        candidates = [Path(target)]
        if base_dir is not None and not Path(target).is_absolute():
            candidates.append(base_dir / target)
        path = next((c.resolve() for c in candidates if c.is_file()), None)
        if path is None:
            tried = ", ".join(str(c) for c in candidates)
            raise RewardLoadError(f"reward {reference!r}: file not found (tried {tried})")
        module = _load_module_from_file(path)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise RewardLoadError(
                f"reward {reference!r}: cannot import module {target!r}: {error}"
            ) from error
    function = getattr(module, attribute, None)
    if function is None:
        raise RewardLoadError(f"reward {reference!r}: {target!r} has no attribute {attribute!r}")
    if not callable(function):
        raise RewardLoadError(f"reward {reference!r}: {attribute!r} is not callable")
    return function


def bind_reward_options(function: Callable[..., Any], options: dict[str, Any] | None) -> Callable[..., Any]:
    """Fix the recipe's `kwargs` for a reward function (e.g. the overlong penalty's lengths)."""
    return functools.partial(function, **options) if options else function


@dataclass(frozen=True)
class RewardSpec:
    """A reward as a recipe names it: picklable, so an isolated worker process can load it for itself (a
    function loaded from a file cannot be pickled by reference)."""

    reference: str
    base_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.reference.rpartition(":")[2]

    def load(self) -> Callable[..., Any]:
        """The function with its options bound, after the function's own option check (`check_options`, if
        it has one: built-in rewards use it to refuse bad kwargs or a missing sandbox before training)."""
        function = load_reward_function(self.reference, Path(self.base_dir) if self.base_dir else None)
        check = getattr(function, "check_options", None)
        if callable(check):
            check(**self.options)
        return bind_reward_options(function, self.options)
