"""IcePopGRPOConfig: TRL's GRPOConfig plus the IcePop band and the rollout-mismatch options."""

from __future__ import annotations

import enum
import logging
import typing
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available
from trl import GRPOConfig

import ring_trl  # noqa: F401  (applies the TRL/transformers shims before TRL is imported)
from ring_trl.grpo.recipe import RecipeError, check_fields
from ring_trl.grpo.sampling import SamplingSettings

logger = logging.getLogger(__name__)

ROLLOUT_DTYPES = ("bf16", "fp16", "fp32")
# Numeric fields whose value must be > 0 (a string or negative learning rate used to reach the optimizer).
POSITIVE_FIELDS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_completion_length",
    "num_iterations",
)
NON_NEGATIVE_FIELDS = ("beta", "weight_decay", "warmup_steps", "warmup_ratio", "max_grad_norm")
# vLLM SamplingParams that reshape the distribution beyond the fields SamplingSettings covers.
VLLM_RESHAPING_KEYS = (
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "allowed_token_ids",
    "bad_words",
    "min_tokens",
)


def bf16_available() -> bool:
    """What transformers requires for `bf16: true` without `use_cpu`: a bf16-capable GPU (or XLA)."""
    return is_torch_bf16_gpu_available() or is_torch_xla_available()


def _fit_precision_to_machine(config: GRPOConfig) -> str | None:
    """Resolve TRL's bf16 default (None means "bf16 unless fp16") for this machine; returns a notice when
    it falls back to fp32, raises ValueError with the fix for a precision the machine cannot run. Without
    CUDA, pinned dataloader memory is switched off as well (it would only warn)."""
    notice = None
    if config.bf16 is None and not config.fp16 and not bf16_available():
        config.bf16 = False
        notice = (
            "no bf16-capable GPU found: training in fp32 (bf16 is TRL's GPU default; set bf16: true with "
            "use_cpu: true for bf16 autocast on the CPU)"
        )
    if config.bf16 and not config.use_cpu and not bf16_available():
        raise ValueError(
            "bf16: true needs a bf16-capable GPU and this machine has none; set bf16: false to train in "
            "fp32, or use_cpu: true for bf16 autocast on the CPU"
        )
    if config.fp16 and not config.use_cpu and not torch.cuda.is_available():
        raise ValueError("fp16: true needs a CUDA GPU and this machine has none; set fp16: false (fp32)")
    if not torch.cuda.is_available():
        config.dataloader_pin_memory = False  # pinned memory only serves host-to-GPU copies
    return notice


@dataclass
class IcePopGRPOConfig(GRPOConfig):
    """GRPOConfig with IcePop. `icepop=False` gives TRL's GRPO loss; HF-generate rollouts sample the same way
    either way (explicit settings, see sampling.py). Without a bf16-capable GPU, TRL's default bf16 becomes fp32
    (`precision_notice` says so); `sampling` holds the resolved SamplingSettings."""

    icepop: bool = field(
        default=True,
        metadata={"help": "Mask policy-gradient tokens whose train/inference ratio leaves [alpha, beta]."},
    )
    icepop_alpha: float = field(
        default=0.5, metadata={"help": "Lower bound of the kept ratio band (inclusive)."}
    )
    icepop_beta: float = field(
        default=5.0, metadata={"help": "Upper bound of the kept ratio band (inclusive)."}
    )
    rollout_dtype: str | None = field(
        default=None,
        metadata={
            "help": "Run HF-generate rollouts under autocast in this precision (bf16, fp16, fp32) to reproduce "
            "an inference engine that differs from training. None: same as training."
        },
    )
    rollout_attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention implementation used only for HF-generate rollouts (e.g. eager, sdpa)."},
    )

    def __post_init__(self) -> None:
        self.precision_notice = _fit_precision_to_machine(self)
        for name in POSITIVE_FIELDS:
            value = getattr(self, name, None)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name in NON_NEGATIVE_FIELDS:
            value = getattr(self, name, None)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 (GRPO compares completions of the same prompt), "
                f"got {self.num_generations}"
            )
        super().__post_init__()
        if self.rollout_dtype is not None and self.rollout_dtype not in ROLLOUT_DTYPES:
            raise ValueError(
                f"rollout_dtype must be one of {ROLLOUT_DTYPES} or null, got {self.rollout_dtype!r}"
            )
        engine = "vllm" if self.use_vllm else "transformers"
        self.sampling = SamplingSettings.from_args(self, engine=engine)
        if self.icepop:
            self._check_icepop()
        if self.precision_notice:
            logger.warning(self.precision_notice)

    def _check_icepop(self) -> None:
        """Settings under which the IcePop ratio would not compare the sampled and trained distributions."""
        if not 0.0 <= self.icepop_alpha <= 1.0 <= self.icepop_beta:
            raise ValueError(
                f"icepop_alpha/icepop_beta: IcePop needs 0 <= icepop_alpha <= 1 <= icepop_beta, got "
                f"alpha={self.icepop_alpha}, beta={self.icepop_beta} (paper defaults: 0.5 and 5)"
            )
        reshaping = self.sampling.reshaping()
        if reshaping:
            given = self.generation_kwargs or {}
            named = ", ".join(
                f"{'generation_kwargs.' if key in given else ''}{key}={value}"
                for key, value in reshaping.items()
            )
            raise ValueError(
                f"{named}: with IcePop the sampler must draw from the full softmax(logits / temperature) the "
                "training pass computes; top_k > 0, top_p < 1, min_p > 0, typical_p < 1 or "
                "repetition_penalty != 1 change that distribution and bias the ratio. Keep top_k=0/null, "
                "top_p=1.0, min_p=null, typical_p=1.0, repetition_penalty=1.0, or set icepop=false."
            )
        if self.use_liger_loss:
            raise ValueError("IcePop is implemented in the PyTorch GRPO loss; set use_liger_loss=false.")
        if self.use_vllm:
            penalties = {
                key: value
                for key, value in (self.generation_kwargs or {}).items()
                if key in VLLM_RESHAPING_KEYS and value not in (None, 0, 0.0, [], {})
            }
            if penalties:
                key, value = next(iter(penalties.items()))
                raise ValueError(
                    f"generation_kwargs.{key}={value!r}: it changes the distribution vLLM samples from, which "
                    "biases the IcePop ratio; remove it or set icepop=false"
                )
        if self.use_vllm and self.vllm_mode == "server" and self.sampling.temperature != 1.0:
            raise ValueError(
                "temperature: TRL 0.24's `trl vllm-serve` returns the raw (pre-temperature) log-probs, so with "
                f"temperature={self.sampling.temperature} the IcePop ratio would be wrong. Use temperature=1.0 "
                "(the paper's setting) or vllm_mode=colocate (which returns processed log-probs)."
            )
        if self.use_vllm and self.vllm_importance_sampling_correction:
            logger.info(
                "IcePop replaces TRL's truncated importance sampling: vllm_importance_sampling_correction=False"
            )
            self.vllm_importance_sampling_correction = False
        if self.use_transformers_paged:
            raise ValueError("IcePop needs sampling log-probs, which paged generation does not return.")


def check_training_fields(training: dict[str, Any], where: str) -> None:
    """Every `training:` key is an IcePopGRPOConfig field of the right type, and enum-like string fields
    (save_strategy, lr_scheduler_type, ...) hold one of their values; a RecipeError names the key otherwise."""
    check_fields(IcePopGRPOConfig, training, where, prefix="training.")
    hints = typing.get_type_hints(IcePopGRPOConfig)
    for key, value in training.items():
        enums = [
            arg for arg in typing.get_args(hints[key]) if isinstance(arg, type) and issubclass(arg, enum.Enum)
        ]
        if enums and isinstance(value, str):
            allowed = [member.value for member in enums[0]]
            if value not in allowed:
                raise RecipeError(f"{where}: training.{key}: must be one of {allowed}, got {value!r}")


def build_icepop_config(training: dict[str, Any], where: str) -> IcePopGRPOConfig:
    """IcePopGRPOConfig from a recipe's `training:` mapping; every problem is a one-line RecipeError."""
    check_training_fields(training, where)
    try:
        return IcePopGRPOConfig(**training)
    except (TypeError, ValueError) as error:
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise RecipeError(f"{where}: training: {message}") from error
