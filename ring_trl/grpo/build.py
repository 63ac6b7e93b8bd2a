"""Turn a GRPORecipe into a ready IcePopGRPOTrainer: model, tokenizer, prompt set, guarded rewards, logging."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM
from transformers.integrations import TensorBoardCallback

from ring_trl.compat import ensure_warnings_issued
from ring_trl.grpo.config import IcePopGRPOConfig, build_icepop_config, check_training_fields
from ring_trl.grpo.preflight import Preflight, run_preflight
from ring_trl.grpo.recipe import GRPORecipe, RecipeError, RewardEntry
from ring_trl.grpo.rewards import GuardedReward, RewardSpec
from ring_trl.grpo.trainer import IcePopGRPOTrainer
from ring_trl.runtime import UsageError


@dataclass(frozen=True)
class OutputPaths:
    model_dir: Path
    tensorboard: Path
    plot: Path


# Checkpoints (with optimizer state) every save_steps, transformers' default strategy; `resume` continues them.
_TRAINING_DEFAULTS: dict[str, Any] = {
    "logging_steps": 1,
    "report_to": ["tensorboard"],
    "save_strategy": "steps",
}


def build_rewards(recipe: GRPORecipe) -> tuple[list[GuardedReward], list[float]]:
    base_dir = recipe.source.parent if recipe.source else None
    rewards, weights, names = [], [], set()
    for i, entry in enumerate(recipe.rewards):
        try:
            spec = _reward_model(entry) if entry.model else None  # a trained reward model, loaded here
        except UsageError as error:
            raise RecipeError(f"{recipe.source}: rewards[{i}] ({entry.label}): {error}") from error
        name = spec.__name__ if spec is not None else str(entry.function).rpartition(":")[2]
        while name in names:
            name += "_"
        names.add(name)
        if spec is None:
            spec = RewardSpec(str(entry.function), str(base_dir) if base_dir else None, entry.kwargs or {})
        try:
            reward = GuardedReward(
                spec,
                name=name,
                timeout_s=entry.timeout_s if entry.timeout_s is not None else recipe.reward_timeout_s,
                failure_value=entry.failure_value
                if entry.failure_value is not None
                else recipe.reward_failure_value,
                isolation=entry.isolation,
                memory_mb=entry.memory_mb,
            )
            reward.start()  # loads it (in its worker, for isolation: process) and runs its option checks
        except (ValueError, RuntimeError) as error:  # load error, bad option, no sandbox, worker start
            raise RecipeError(f"{recipe.source}: rewards[{i}] ({entry.label}): {error}") from error
        rewards.append(reward)
        weights.append(float(entry.weight))
    return rewards, weights


def _reward_model(entry: RewardEntry) -> Any:
    """A reward-model entry's reward: trusted kit code holding the model, run in the trainer (a thread)."""
    from ring_trl.grpo.rewards.reward_model import load_reward_model

    if entry.isolation != "thread" or entry.memory_mb is not None:
        raise UsageError("a reward model runs in the trainer process: isolation: thread, no memory_mb")

    return load_reward_model(str(entry.model), **(entry.kwargs or {}))


def build_config(recipe: GRPORecipe, reward_weights: list[float]) -> tuple[IcePopGRPOConfig, bool]:
    """The trainer config (a one-line RecipeError for any bad field) and whether TensorBoard is wanted."""
    check_training_fields(recipe.training, str(recipe.source))
    training = {**_TRAINING_DEFAULTS, **recipe.training, "reward_weights": reward_weights}
    report_to = training["report_to"]
    report_to = [report_to] if isinstance(report_to, str) else list(report_to or [])
    # TensorBoard is attached by build_trainer with a fixed folder, so it is not requested twice.
    training["report_to"] = [r for r in report_to if r not in ("tensorboard", "none")] or "none"
    config = build_icepop_config(training, str(recipe.source))
    wants_tensorboard = "tensorboard" in report_to
    return config, wants_tensorboard


def register_moe_leaf_modules_for_zero3(model: torch.nn.Module) -> list[str]:
    """ZeRO-3 gathers parameters per module as they are used; an MoE block where ranks route to different
    experts would wait forever for each other. Marking the whole block a leaf makes ZeRO-3 gather it at once."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return []
    from deepspeed.utils import set_z3_leaf_modules

    classes = {type(m) for m in model.modules() if type(m).__name__.endswith("SparseMoeBlock")}
    if classes:
        set_z3_leaf_modules(model, list(classes))
    return sorted(c.__name__ for c in classes)


def build_trainer(
    recipe: GRPORecipe, checked: Preflight | None = None
) -> tuple[IcePopGRPOTrainer, OutputPaths]:
    """The trainer for a recipe; runs the pre-flight first (raises PreflightError) unless given its result."""
    checked = checked or run_preflight(recipe)
    config = checked.config
    dtype: Any = recipe.model_dtype if recipe.model_dtype == "auto" else getattr(torch, recipe.model_dtype)
    model = AutoModelForCausalLM.from_pretrained(
        checked.model_dir, trust_remote_code=recipe.trust_remote_code, dtype=dtype
    )
    ensure_warnings_issued(model)
    register_moe_leaf_modules_for_zero3(model)
    peft_config = None
    if recipe.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="CAUSAL_LM", **recipe.lora)
    output_dir = Path(config.output_dir)
    paths = OutputPaths(
        model_dir=output_dir / "final",
        tensorboard=output_dir / "tensorboard",
        plot=output_dir / "reward_masked_frac.png",
    )
    callbacks = []
    if checked.wants_tensorboard:
        tensorboard = TensorBoardCallback()
        tensorboard.logging_dir = str(paths.tensorboard)
        callbacks.append(tensorboard)
    trainer = IcePopGRPOTrainer(
        model=model,
        reward_funcs=checked.rewards,
        args=config,
        train_dataset=checked.dataset,
        processing_class=checked.tokenizer,
        callbacks=callbacks,
        peft_config=peft_config,
    )
    if recipe.save_samples:
        from ring_trl.grpo.samples import SampleLog, samples_path

        path = samples_path(output_dir, trainer.accelerator.process_index)
        trainer.sample_log = SampleLog(
            path, list(trainer.reward_func_names), checked.weights, bool(recipe.resume)
        )
    return trainer, paths
