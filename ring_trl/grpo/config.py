"""IcePopGRPOConfig: TRL's GRPOConfig plus the IcePop band and the rollout-mismatch options."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from trl import GRPOConfig

import ring_trl  # noqa: F401  (applies the TRL/transformers shims before TRL is imported)

logger = logging.getLogger(__name__)

ROLLOUT_DTYPES = ("bf16", "fp16", "fp32")


@dataclass
class IcePopGRPOConfig(GRPOConfig):
    """GRPOConfig with IcePop. `icepop=False` gives exactly TRL's GRPOTrainer behaviour."""

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
        super().__post_init__()
        if self.rollout_dtype is not None and self.rollout_dtype not in ROLLOUT_DTYPES:
            raise ValueError(
                f"rollout_dtype must be one of {ROLLOUT_DTYPES} or null, got {self.rollout_dtype!r}"
            )
        if not self.icepop:
            return
        if not 0.0 <= self.icepop_alpha <= 1.0 <= self.icepop_beta:
            raise ValueError(
                f"IcePop needs 0 <= icepop_alpha <= 1 <= icepop_beta, got alpha={self.icepop_alpha}, "
                f"beta={self.icepop_beta} (paper defaults: 0.5 and 5)"
            )
        truncated = (
            self.top_p < 1.0
            or self.top_k not in (None, 0, -1)
            or (self.min_p is not None and self.min_p > 0.0)
            or self.repetition_penalty != 1.0
        )
        if truncated:
            raise ValueError(
                "IcePop compares the sampler's log-probs with the full softmax(logits / temperature) of the "
                "training pass; top_p < 1, top_k > 0, min_p > 0 or repetition_penalty != 1 change the sampling "
                f"distribution and bias that ratio (got top_p={self.top_p}, top_k={self.top_k}, "
                f"min_p={self.min_p}, repetition_penalty={self.repetition_penalty}). "
                "Keep top_p=1.0, top_k=0/null, min_p=null, repetition_penalty=1.0, or set icepop=false."
            )
        if self.use_liger_loss:
            raise ValueError("IcePop is implemented in the PyTorch GRPO loss; set use_liger_loss=false.")
        if self.use_vllm and self.vllm_mode == "server" and self.temperature != 1.0:
            raise ValueError(
                "TRL 0.24's `trl vllm-serve` returns the raw (pre-temperature) log-probs, so with "
                f"temperature={self.temperature} the IcePop ratio would be wrong. Use temperature=1.0 "
                "(the paper's setting) or vllm_mode=colocate (which returns processed log-probs)."
            )
        if self.use_vllm and self.vllm_importance_sampling_correction:
            logger.info(
                "IcePop replaces TRL's truncated importance sampling: vllm_importance_sampling_correction=False"
            )
            self.vllm_importance_sampling_correction = False
        if self.use_transformers_paged:
            raise ValueError("IcePop needs sampling log-probs, which paged generation does not return.")
