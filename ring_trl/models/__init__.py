"""Ring 2.0 model code, registered with the transformers Auto classes for in-process use."""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from ring_trl.models.bailing_moe_v2 import (
    BailingMoeV2AliasConfig,
    BailingMoeV2Config,
    BailingMoeV2ForCausalLM,
    BailingMoeV2Model,
)


class BailingMoeV2AliasModel(BailingMoeV2Model):
    """BailingMoeV2Model for configs that say model_type "bailing_moe_v2"."""

    config_class = BailingMoeV2AliasConfig


class BailingMoeV2AliasForCausalLM(BailingMoeV2ForCausalLM):
    """BailingMoeV2ForCausalLM for configs that say model_type "bailing_moe_v2"."""

    config_class = BailingMoeV2AliasConfig


def register_auto_classes() -> None:
    """Make AutoConfig/AutoModel(ForCausalLM) resolve model_type "bailing_moe" and "bailing_moe_v2" to our code."""
    pairs = (
        (BailingMoeV2Config, BailingMoeV2Model, BailingMoeV2ForCausalLM),
        (BailingMoeV2AliasConfig, BailingMoeV2AliasModel, BailingMoeV2AliasForCausalLM),
    )
    for config_class, model_class, lm_class in pairs:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, lm_class, exist_ok=True)


register_auto_classes()

__all__ = ["BailingMoeV2Config", "BailingMoeV2ForCausalLM", "BailingMoeV2Model", "register_auto_classes"]
