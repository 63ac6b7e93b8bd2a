"""Pre-flight of a GRPO recipe: everything that can fail is checked before the model loads.

`python -m ring_trl.grpo.preflight <recipe.yaml> [key=value ...]` runs it alone (`python -m ring_trl.grpo` always
runs it first). It checks the `training:` fields and the precision this machine can run, the model folder (config,
weights, tokenizer files, a chat template that renders the first prompt), the prompt set, and every reward: it
imports, the dataset has the columns it needs, and it returns a number when called on the first row with a
completion that ends in that row's answer. Each problem is one line; exit status 2 when there are any.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ring_trl.grpo.recipe import GRPORecipe, RecipeError, load_recipe
from ring_trl.model_paths import missing_tokenizer_message, missing_weights_message, require_model_folder
from ring_trl.runtime import UsageError, run_cli, use_offline_defaults

# Reward parameters TRL fills itself; every other parameter without a default must be a dataset column.
TRL_REWARD_ARGUMENTS = frozenset({"prompts", "completions", "completion_ids", "trainer_state"})


class PreflightError(UsageError):
    """One or more problems, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Preflight:
    """What the checks loaded, handed on to the trainer so nothing is read twice."""

    recipe: GRPORecipe
    config: Any
    wants_tensorboard: bool
    model_dir: Path
    tokenizer: Any
    dataset: Any
    rewards: list[Any]
    weights: list[float]
    notes: list[str] = field(default_factory=list)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def check_model_folder(recipe: GRPORecipe) -> tuple[Path | None, list[str]]:
    where = recipe.source
    try:
        model_dir = require_model_folder(recipe.model_name_or_path)
    except UsageError as error:
        hint = _relative_hint(recipe, recipe.model_name_or_path)
        return None, [f"{where}: model_name_or_path: {error}{hint}"]
    found = (missing_weights_message(model_dir, model_dir), missing_tokenizer_message(model_dir, model_dir))
    return model_dir, [f"{where}: model_name_or_path: {problem}" for problem in found if problem]


def load_tokenizer(recipe: GRPORecipe, model_dir: Path) -> tuple[Any, list[str]]:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_dir, trust_remote_code=recipe.trust_remote_code, truncation_side="left"
        )
    except Exception as error:
        return None, [f"{recipe.source}: the tokenizer in {model_dir} does not load: {_first_line(error)}"]
    return tokenizer, []


def check_prompt_rendering(recipe: GRPORecipe, tokenizer: Any, dataset: Any) -> list[str]:
    """Chat prompts need the folder's chat template; render the first one as the trainer will."""
    prompt = dataset[0]["prompt"]
    if isinstance(prompt, str):
        return []
    if not getattr(tokenizer, "chat_template", None):
        return [
            f"{recipe.source}: {recipe.dataset} has chat prompts but {recipe.model_name_or_path} has no chat "
            "template (chat_template.jinja or tokenizer_config.json chat_template); prepare the folder with "
            "`make prepare-model` or use plain-string prompts"
        ]
    try:
        tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    except Exception as error:
        return [
            f"{recipe.source}: the chat template cannot render row 1 of {recipe.dataset}: {_first_line(error)}"
        ]
    return []


def _target_function(reward: Any) -> Any:
    """The user's function behind a GuardedReward (and a functools.partial of the recipe's kwargs)."""
    return getattr(reward, "fn", None) or reward


def missing_columns(reward: Any, columns: list[str]) -> list[str]:
    """Required parameters of the reward that TRL does not fill and the dataset has no column for."""
    try:
        signature = inspect.signature(_target_function(reward))
    except (TypeError, ValueError):
        return []
    required = [
        name
        for name, parameter in signature.parameters.items()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and name not in TRL_REWARD_ARGUMENTS
    ]
    return [name for name in required if name not in columns]


def sample_completion(row: dict[str, Any]) -> str:
    """A well-formed Ring completion (the generation prompt opened `<think>`) ending in the row's answer."""
    answer = row.get("answer")
    return f"Working it out.</think>\n\n{answer if isinstance(answer, str) and answer else '0'}"


@contextlib.contextmanager
def _captured_reward_warnings() -> Iterator[list[str]]:
    """The guard logs why a reward failed; keep those lines for the pre-flight's one-line problem."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    reward_logger = logging.getLogger("ring_trl.grpo.rewards")
    reward_logger.addHandler(handler)
    try:
        yield messages
    finally:
        reward_logger.removeHandler(handler)


def call_rewards_on_first_row(
    recipe: GRPORecipe, rewards: list[Any], tokenizer: Any, dataset: Any
) -> tuple[list[str], list[str]]:
    """Call every reward on row 1 the way TRL will; returns (problems, notes)."""
    from transformers import TrainerState

    row = dataset[0]
    text = sample_completion(row)
    completion: Any = text if isinstance(row["prompt"], str) else [{"role": "assistant", "content": text}]
    columns = {key: [value] for key, value in row.items() if key != "prompt"}
    completion_ids = [tokenizer(text, add_special_tokens=False)["input_ids"]]
    problems, notes = [], []
    for entry, reward in zip(recipe.rewards, rewards, strict=True):
        name = getattr(reward, "__name__", entry.label)
        absent = missing_columns(reward, list(row))
        if absent:
            problems.append(
                f"{recipe.source}: reward {entry.label} needs the dataset column(s) {absent}, which "
                f"{recipe.dataset} does not have (columns: {sorted(row)})"
            )
            continue
        take_failures = getattr(reward, "take_failure_count", None)
        if take_failures is not None:
            take_failures()
        with _captured_reward_warnings() as warnings:
            try:
                values = reward(
                    prompts=[row["prompt"]],
                    completions=[completion],
                    completion_ids=completion_ids,
                    trainer_state=TrainerState(),
                    **columns,
                )
            except Exception as error:  # an unguarded reward
                problems.append(f"{recipe.source}: reward {entry.label} fails on row 1: {_first_line(error)}")
                continue
        failed = take_failures() if take_failures is not None else 0
        if failed:
            reason = warnings[-1] if warnings else "see the warning above"
            problems.append(
                f"{recipe.source}: reward {entry.label} fails on row 1 of {recipe.dataset}: {reason}"
            )
            continue
        values = list(values)
        if len(values) != 1:
            problems.append(
                f"{recipe.source}: reward {entry.label} returned {len(values)} values for 1 completion"
            )
            continue
        notes.append(f"{name}={values[0]}")
    return problems, notes


def run_preflight(recipe: GRPORecipe) -> Preflight:
    """All checks; raises PreflightError listing every problem found (independent checks all run)."""
    from ring_trl.grpo.build import build_config, build_rewards
    from ring_trl.grpo.data import load_prompt_dataset

    problems: list[str] = []
    weights = [float(entry.weight) for entry in recipe.rewards]
    config = wants_tensorboard = None
    try:
        config, wants_tensorboard = build_config(recipe, weights)
    except RecipeError as error:
        problems.append(str(error))
    if config is not None and config.use_vllm and importlib.util.find_spec("vllm") is None:
        problems.append(
            f"{recipe.source}: training.use_vllm: true, but vLLM is not installed in this environment"
        )
    deepspeed = recipe.training.get("deepspeed")
    if isinstance(deepspeed, str) and not Path(deepspeed).is_file():
        problems.append(f"{recipe.source}: training.deepspeed: {deepspeed} does not exist")
    if recipe.resume not in (None, "auto") and not Path(recipe.resume).is_dir():
        problems.append(f"{recipe.source}: resume: checkpoint folder {recipe.resume} does not exist")

    model_dir, found = check_model_folder(recipe)
    problems += found
    tokenizer = None
    if model_dir is not None and not found:
        tokenizer, found = load_tokenizer(recipe, model_dir)
        problems += found

    dataset = None
    try:
        dataset = load_prompt_dataset(recipe.dataset, max_samples=recipe.max_samples)
    except FileNotFoundError as error:
        problems.append(f"{recipe.source}: {error}" + _relative_hint(recipe, recipe.dataset))
    except (OSError, ValueError) as error:  # DatasetFormatError: file:line: what is wrong
        problems.append(
            str(error) if isinstance(error, ValueError) else f"{recipe.source}: {_first_line(error)}"
        )

    rewards: list[Any] = []
    try:
        rewards, weights = build_rewards(recipe)
    except RecipeError as error:  # already names the recipe and rewards[i]
        problems.append(str(error))
    except (ValueError, ImportError) as error:  # RewardLoadError names the reward
        problems.append(f"{recipe.source}: {error}")

    notes: list[str] = []
    if tokenizer is not None and dataset is not None:
        problems += check_prompt_rendering(recipe, tokenizer, dataset)
        if rewards:
            found, values = call_rewards_on_first_row(recipe, rewards, tokenizer, dataset)
            problems += found
            if values:
                notes.append(f"rewards on row 1 with its reference answer: {', '.join(values)}")
    if problems:
        raise PreflightError(problems)
    assert config is not None and model_dir is not None  # no problems: both were built
    return Preflight(
        recipe=recipe,
        config=config,
        wants_tensorboard=bool(wants_tensorboard),
        model_dir=model_dir,
        tokenizer=tokenizer,
        dataset=dataset,
        rewards=rewards,
        weights=weights,
        notes=notes,
    )


def _relative_hint(recipe: GRPORecipe, value: str) -> str:
    if recipe.source is None or Path(value).is_absolute():
        return ""
    return (
        f" (relative paths in a recipe file are resolved against its folder, {recipe.base_dir}/; "
        "on the command line, against the current directory)"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    recipe = load_recipe(argv[0], argv[1:])
    try:
        checked = run_preflight(recipe)
    except PreflightError as error:
        for problem in error.problems:
            print(f"preflight: {problem}", file=sys.stderr)
        return 2
    print(f"preflight: {recipe.source}: ok ({checked.model_dir}, {len(checked.dataset)} prompts)")
    for note in checked.notes:
        print(f"preflight: {note}")
    return 0


if __name__ == "__main__":
    use_offline_defaults()
    sys.exit(run_cli(main, prog="preflight"))
