"""GRPO recipe files: which model, which prompt set, which rewards, and the IcePopGRPOConfig arguments.

    model_name_or_path: ../../models/ring-tiny
    dataset: data/toy_arithmetic.jsonl
    rewards:
      - function: ring_trl.grpo.rewards:math_answer     # or path/to/file.py:function
        weight: 1.0
        kwargs: {}                                      # fixed keyword arguments
    training: {output_dir: ../../outputs/grpo/x, icepop: true, ...}   # any IcePopGRPOConfig field
    resume: null                                        # auto | path/to/checkpoint-N

Relative paths written in a recipe file (model folder, dataset, reward files, output_dir, logging_dir,
deepspeed, resume) are resolved against the recipe file's folder, so a task folder works from anywhere.
Command-line overrides are `key=value` (YAML values): recipe keys by name, anything else goes to `training`
(`max_steps=4` or `training.max_steps=4`); paths given there are relative to the current directory.
Every value is type-checked against the dataclass fields below when the recipe loads: a bad one is a one-line
RecipeError naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ring_trl.model_paths import looks_like_hub_id
from ring_trl.runtime import UsageError


class RecipeError(UsageError, ValueError):
    """The recipe file or an override is invalid (printed as one line, exit status 2)."""


@dataclass
class RewardEntry:
    function: str | None = None  # package.module:fn or path/to/file.py:fn ...
    model: str | None = (
        None  # ... or a reward-model folder (ring_trl/grpo/rewards/reward_model.py, docs/rlhf.md)
    )
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None
    failure_value: float | None = None
    isolation: str = "thread"  # thread | process (a worker process with a memory cap; see docs/grpo.md)
    memory_mb: int | None = None  # isolation: process only; default 4096

    @property
    def label(self) -> str:
        """How messages name this reward."""
        return self.function or f"model {self.model}"


@dataclass
class GRPORecipe:
    model_name_or_path: str
    dataset: str
    rewards: list[RewardEntry]
    training: dict[str, Any] = field(default_factory=dict)
    trust_remote_code: bool = True
    model_dtype: str = "auto"
    max_samples: int | None = None
    lora: dict[str, Any] | None = None
    reward_timeout_s: float | None = 120.0
    reward_failure_value: float | None = 0.0
    resume: str | None = None
    save_samples: bool = (
        False  # every rollout + rewards to output_dir/samples.jsonl (ring_trl/grpo/samples.py)
    )
    source: Path | None = None

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the recipe file were resolved against."""
        return self.source.parent if self.source is not None else Path(".")


_RECIPE_KEYS = {f.name for f in dataclasses.fields(GRPORecipe)} - {"source"}
_REWARD_KEYS = {f.name for f in dataclasses.fields(RewardEntry)}
# Training fields that name a file or folder.
TRAINING_PATH_KEYS = ("output_dir", "logging_dir", "deepspeed")


def unknown_key_message(key: str, allowed: typing.Iterable[str], prefix: str = "") -> str:
    """`unknown key 'x'` plus the closest allowed name, when one is close."""
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f"unknown key {prefix + key!r}" + (f" (did you mean {prefix + close[0]!r}?)" if close else "")


@functools.cache
def _type_adapter(hint: Any) -> Any:
    from pydantic import ConfigDict, TypeAdapter

    return TypeAdapter(hint, config=ConfigDict(strict=True, arbitrary_types_allowed=True))


def type_problem(value: Any, hint: Any) -> str | None:
    """Why `value` does not fit the type annotation `hint` (strict: no "3" for an int, no 1 for a bool)."""
    from pydantic import ValidationError

    try:
        adapter = _type_adapter(hint)
    except Exception:  # an annotation pydantic cannot express: nothing to check against
        return None
    try:
        adapter.validate_python(value)
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"]
        return message[0].lower() + message[1:]
    return None


def check_fields(
    cls: type, data: dict[str, Any], where: str, prefix: str = "", skip: typing.Container[str] = ()
) -> None:
    """Check every key of `data` against the dataclass `cls`: known, and of the annotated type. Errors read
    `<where>: <prefix><key>: <what is wrong>`."""
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key in skip:
            continue
        if key not in hints:
            raise RecipeError(f"{where}: {unknown_key_message(key, hints, prefix)}")
        problem = type_problem(value, hints[key])
        if problem:
            raise RecipeError(f"{where}: {prefix}{key}: {problem}, got {value!r}")


def _parse_rewards(raw: Any, where: str) -> list[RewardEntry]:
    if not isinstance(raw, list) or not raw:
        raise RecipeError(f"{where}: 'rewards' must be a non-empty list")
    entries = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"function": item}
        if not isinstance(item, dict) or ("function" in item) == ("model" in item):
            raise RecipeError(
                f"{where}: rewards[{i}] needs a 'function' (package.module:fn or file.py:fn) "
                "or a reward 'model' folder (one of the two)"
            )
        unknown = set(item) - _REWARD_KEYS
        if unknown:
            raise RecipeError(
                f"{where}: rewards[{i}] has unknown keys {sorted(unknown)}; allowed {sorted(_REWARD_KEYS)}"
            )
        check_fields(RewardEntry, item, where, prefix=f"rewards[{i}].")
        entries.append(RewardEntry(**item))
    return entries


_FLOAT_LITERAL = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def coerce_number(value: Any) -> Any:
    """YAML 1.1 reads `2e-3` (no dot in the mantissa) as a string; every trainer wants it as a float."""
    if isinstance(value, str) and _FLOAT_LITERAL.match(value.strip()):
        return float(value)
    return value


def resolve_path(value: str, base_dir: Path) -> str:
    """`value` relative to `base_dir` (absolute and `~` paths as they are), normalised for messages."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    return os.path.normpath(base_dir / path)


def _is_file_reference(reference: str) -> bool:
    target = reference.rpartition(":")[0]
    return target.endswith(".py") or "/" in target or "\\" in target


def _resolve_file_paths(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """The recipe file's relative paths made relative to its folder (before command-line overrides)."""
    data = dict(data)
    model = data.get("model_name_or_path")
    if isinstance(model, str) and model and not looks_like_hub_id(model):
        data["model_name_or_path"] = resolve_path(model, base_dir)
    if isinstance(data.get("dataset"), str) and data["dataset"]:
        data["dataset"] = resolve_path(data["dataset"], base_dir)
    if isinstance(data.get("resume"), str) and data["resume"] not in ("", "auto"):
        data["resume"] = resolve_path(data["resume"], base_dir)
    if isinstance(data.get("rewards"), list):
        rewards = []
        for item in data["rewards"]:
            entry = {"function": item} if isinstance(item, str) else item
            if isinstance(entry, dict) and isinstance(entry.get("model"), str) and entry["model"]:
                entry = {**entry, "model": resolve_path(entry["model"], base_dir)}
            if isinstance(entry, dict) and isinstance(entry.get("function"), str):
                reference = entry["function"]
                if _is_file_reference(reference):
                    target, _, attribute = reference.rpartition(":")
                    entry = {**entry, "function": f"{resolve_path(target, base_dir)}:{attribute}"}
            rewards.append(entry)
        data["rewards"] = rewards
    training = data.get("training")
    if isinstance(training, dict):
        data["training"] = {
            key: resolve_path(value, base_dir)
            if key in TRAINING_PATH_KEYS and isinstance(value, str)
            else value
            for key, value in training.items()
        }
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key=value` strings to the raw recipe mapping."""
    data = dict(data)
    training = dict(data.get("training") or {})
    for override in overrides:
        key, sep, raw_value = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(f"override {override!r}: expected key=value")
        try:
            value = coerce_number(yaml.safe_load(raw_value))
        except yaml.YAMLError as error:
            problem = str(error).splitlines()[0]
            raise RecipeError(f"override {override!r}: value is not valid YAML: {problem}") from error
        if key.startswith("training."):
            training[key.removeprefix("training.")] = value
        elif key in _RECIPE_KEYS and key != "training":
            data[key] = value
        else:
            training[key] = value
    data["training"] = {name: coerce_number(value) for name, value in training.items()}
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> GRPORecipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise RecipeError(f"{path}: {line}invalid YAML: {problem}") from error
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping at the top level")
    for key in data:
        if key not in _RECIPE_KEYS:
            raise RecipeError(
                f"{path}: {unknown_key_message(key, _RECIPE_KEYS)}; allowed {sorted(_RECIPE_KEYS)}"
            )
    data = _resolve_file_paths(data, path.parent)
    data = apply_overrides(data, overrides or [])
    for required in ("model_name_or_path", "dataset", "rewards"):
        if not data.get(required):
            raise RecipeError(f"{path}: missing required key '{required}'")
    if not isinstance(data["training"], dict):
        raise RecipeError(f"{path}: 'training' must be a mapping of IcePopGRPOConfig fields")
    check_fields(GRPORecipe, data, str(path), skip=("rewards",))
    data["rewards"] = _parse_rewards(data["rewards"], str(path))
    return GRPORecipe(**data, source=path)
