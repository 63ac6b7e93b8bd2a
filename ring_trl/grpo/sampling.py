"""What a rollout samples from: explicit settings, and nothing filled in by `generate` behind them.

`generate` fills every sampling field a config leaves unset from the checkpoint's generation_config.json, then
from transformers' global defaults (top_k 50: TRL's documented `top_k: null`, "no top-k", becomes top-k 50), and
runs those warpers after any processor passed in, so after a log-prob recorder. HF-generate rollouts therefore
build every distribution-changing processor themselves from `SamplingSettings` (the recipe's fields and
`generation_kwargs`, nothing else), hand `generate` a config in which all of them are neutral, and hide the
checkpoint's generation config while sampling. IcePop on and off use the same path: same seed, same tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

# generation_kwargs keys that do not change which token is drawn: passed to `generate` as they are.
PASSTHROUGH_GENERATION_KEYS = frozenset(
    {"use_cache", "cache_implementation", "cache_config", "max_new_tokens"}
)
# What `generate` must see so that it adds no processor of its own (values it would otherwise fill in).
NEUTRAL_GENERATION_FIELDS: dict[str, Any] = {
    "do_sample": True,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_length": 0,
    "renormalize_logits": False,
    "remove_invalid_values": False,
}

# Fields of a checkpoint's generation config that would change the sampled distribution if filled in.
CHECKPOINT_DISTRIBUTION_KEYS = (frozenset(NEUTRAL_GENERATION_FIELDS) - {"do_sample", "num_beams"}) | {
    "min_p",
    "top_h",
    "suppress_tokens",
    "begin_suppress_tokens",
    "bad_words_ids",
    "sequence_bias",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "exponential_decay_length_penalty",
    "guidance_scale",
    "watermarking_config",
}


@dataclass(frozen=True)
class SamplingSettings:
    """The whole sampling distribution of a rollout: softmax(processed logits), nothing filled in elsewhere."""

    temperature: float = 1.0
    top_k: int = 0  # 0: off (TRL's None and vLLM's -1 mean the same)
    top_p: float = 1.0
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0

    @classmethod
    def from_args(cls, args: Any, engine: str = "transformers") -> SamplingSettings:
        """The settings a GRPOConfig asks for: its fields, overridden by `generation_kwargs` (as TRL does).

        Raises ValueError naming the key for a value out of range or, for the transformers engine, a
        `generation_kwargs` key that would change the distribution in a way these settings do not describe."""
        values: dict[str, Any] = {
            "temperature": args.temperature,
            "top_k": args.top_k,
            "top_p": args.top_p,
            "min_p": args.min_p,
            "repetition_penalty": args.repetition_penalty,
        }
        names = {name: name for name in values}
        extra: Mapping[str, Any] = args.generation_kwargs or {}
        known = {f.name for f in fields(cls)}
        for key, value in extra.items():
            if key in known:
                values[key] = value
                names[key] = f"generation_kwargs.{key}"
            elif engine == "transformers" and key not in PASSTHROUGH_GENERATION_KEYS:
                raise ValueError(
                    f"generation_kwargs.{key}: not supported for HF-generate rollouts; it would change the "
                    f"sampling distribution outside the settings the trainer applies and records "
                    f"(supported: {sorted(known | PASSTHROUGH_GENERATION_KEYS)})"
                )
        return cls._checked(values, names)

    @classmethod
    def _checked(cls, values: dict[str, Any], names: dict[str, str]) -> SamplingSettings:
        def number(key: str, default: float) -> float:
            value = values.get(key)
            if value is None:
                return default
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{names[key]} must be a number, got {value!r}")
            return float(value)

        top_k = values.get("top_k")
        if top_k is None or top_k == -1:
            top_k = 0
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"{names['top_k']} must be a whole number >= 0 (0 or null: off), got {top_k!r}")
        settings = cls(
            temperature=number("temperature", 1.0),
            top_k=top_k,
            top_p=number("top_p", 1.0),
            min_p=number("min_p", 0.0),
            typical_p=number("typical_p", 1.0),
            repetition_penalty=number("repetition_penalty", 1.0),
        )
        ranges = {
            "temperature": settings.temperature > 0,
            "top_p": 0 < settings.top_p <= 1,
            "min_p": 0 <= settings.min_p <= 1,
            "typical_p": 0 < settings.typical_p <= 1,
            "repetition_penalty": settings.repetition_penalty > 0,
        }
        bounds = {
            "temperature": "> 0",
            "top_p": "in (0, 1]",
            "min_p": "in [0, 1]",
            "typical_p": "in (0, 1]",
            "repetition_penalty": "> 0",
        }
        for key, ok in ranges.items():
            if not ok:
                raise ValueError(f"{names[key]} must be {bounds[key]}, got {getattr(settings, key)}")
        return settings

    def reshaping(self) -> dict[str, float]:
        """The active settings beyond temperature: each makes the sampled distribution differ from
        softmax(logits / T), the distribution a training pass computes."""
        active = {
            "top_k": self.top_k > 0,
            "top_p": self.top_p < 1.0,
            "min_p": self.min_p > 0.0,
            "typical_p": self.typical_p < 1.0,
            "repetition_penalty": self.repetition_penalty != 1.0,
        }
        return {name: getattr(self, name) for name, on in active.items() if on}

    def processors(self) -> list[LogitsProcessor]:
        """The processors for these settings, in the order `generate` itself would apply them."""
        processors: list[LogitsProcessor] = []
        if self.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k > 0:
            processors.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1.0:
            processors.append(TopPLogitsWarper(self.top_p))
        if self.min_p > 0.0:
            processors.append(MinPLogitsWarper(self.min_p))
        if self.typical_p < 1.0:
            processors.append(TypicalLogitsWarper(self.typical_p))
        return processors


def rollout_generation_config(
    base: GenerationConfig, generation_kwargs: Mapping[str, Any] | None
) -> GenerationConfig:
    """`base`'s length and token ids with every distribution field neutral (the processors carry them)."""
    passthrough = {k: v for k, v in (generation_kwargs or {}).items() if k in PASSTHROUGH_GENERATION_KEYS}
    return GenerationConfig(
        max_new_tokens=base.max_new_tokens,
        pad_token_id=base.pad_token_id,
        bos_token_id=base.bos_token_id,
        eos_token_id=base.eos_token_id,
        cache_implementation=base.cache_implementation,
        disable_compile=True,  # as TRL's own HF-generate rollouts
        **{**NEUTRAL_GENERATION_FIELDS, **passthrough},
    )


def sampling_processors(settings: SamplingSettings, recorder: LogitsProcessor | None) -> LogitsProcessorList:
    """The settings' processors, then the recorder (when recording), which must see the final scores."""
    processors = settings.processors()
    if recorder is not None:
        processors.append(recorder)
    return LogitsProcessorList(processors)


@contextmanager
def checkpoint_generation_defaults_hidden(model: torch.nn.Module) -> Iterator[None]:
    """While sampling, `generate` sees an empty generation config on the model, so nothing from the
    checkpoint's generation_config.json (top_p, min_p, typical_p, suppress_tokens, ...) is filled in."""
    previous = getattr(model, "generation_config", None)
    if previous is None:
        yield
        return
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = previous


def checkpoint_sampling_overrides(model: torch.nn.Module) -> dict[str, Any]:
    """The distribution fields a checkpoint's generation config sets (rollouts ignore them; for a notice)."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return {}
    return {
        key: value
        for key, value in config.to_diff_dict().items()
        if key in CHECKPOINT_DISTRIBUTION_KEYS and value != NEUTRAL_GENERATION_FIELDS.get(key)
    }
