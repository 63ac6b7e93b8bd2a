"""GRPO recipe files: which model, which prompt set, which rewards, and the IcePopGRPOConfig arguments.

    model_name_or_path: models/ring-tiny
    dataset: recipes/grpo/data/toy_arithmetic.jsonl
    rewards:
      - function: ring_trl.grpo.rewards:math_answer     # or path/to/file.py:function
        weight: 1.0
        kwargs: {}                                      # fixed keyword arguments
    training: {output_dir: outputs/grpo/x, icepop: true, ...}   # any IcePopGRPOConfig field

Command-line overrides are `key=value` (YAML values): recipe keys by name, anything else goes to `training`
(`max_steps=4` or `training.max_steps=4`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class RecipeError(ValueError):
    """The recipe file or an override is invalid."""


@dataclass
class RewardEntry:
    function: str
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None
    failure_value: float | None = None
    isolation: str = "thread"  # thread | process (a worker process with a memory cap; see docs/grpo.md)
    memory_mb: int | None = None  # isolation: process only; default 4096


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
    source: Path | None = None


_RECIPE_KEYS = {f.name for f in dataclasses.fields(GRPORecipe)} - {"source"}
_REWARD_KEYS = {f.name for f in dataclasses.fields(RewardEntry)}


def _parse_rewards(raw: Any, where: str) -> list[RewardEntry]:
    if not isinstance(raw, list) or not raw:
        raise RecipeError(f"{where}: 'rewards' must be a non-empty list")
    entries = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"function": item}
        if not isinstance(item, dict) or "function" not in item:
            raise RecipeError(f"{where}: rewards[{i}] needs a 'function' (package.module:fn or file.py:fn)")
        unknown = set(item) - _REWARD_KEYS
        if unknown:
            raise RecipeError(
                f"{where}: rewards[{i}] has unknown keys {sorted(unknown)}; allowed {sorted(_REWARD_KEYS)}"
            )
        entries.append(RewardEntry(**item))
    return entries


_FLOAT_LITERAL = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def coerce_number(value: Any) -> Any:
    """YAML 1.1 reads `2e-3` (no dot in the mantissa) as a string; every trainer wants it as a float."""
    if isinstance(value, str) and _FLOAT_LITERAL.match(value.strip()):
        return float(value)
    return value


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
            raise RecipeError(f"override {override!r}: value is not valid YAML: {error}") from error
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
        raise RecipeError(f"{path}: invalid YAML: {error}") from error
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping at the top level")
    unknown = set(data) - _RECIPE_KEYS
    if unknown:
        raise RecipeError(f"{path}: unknown keys {sorted(unknown)}; allowed {sorted(_RECIPE_KEYS)}")
    data = apply_overrides(data, overrides or [])
    for required in ("model_name_or_path", "dataset", "rewards"):
        if not data.get(required):
            raise RecipeError(f"{path}: missing required key '{required}'")
    if not isinstance(data["training"], dict):
        raise RecipeError(f"{path}: 'training' must be a mapping of IcePopGRPOConfig fields")
    data["rewards"] = _parse_rewards(data["rewards"], str(path))
    return GRPORecipe(**data, source=path)
