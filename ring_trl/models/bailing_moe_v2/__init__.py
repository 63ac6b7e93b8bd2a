"""The BailingMoeV2 (Ring/Ling 2.0) configuration and model; both files are also copied into model folders."""

from ring_trl.models.bailing_moe_v2.configuration_bailing_moe_v2 import (
    BailingMoeV2AliasConfig,
    BailingMoeV2Config,
)
from ring_trl.models.bailing_moe_v2.modeling_bailing_moe_v2 import (
    BailingMoeV2ForCausalLM,
    BailingMoeV2Model,
    BailingMoeV2PreTrainedModel,
)

__all__ = [
    "BailingMoeV2AliasConfig",
    "BailingMoeV2Config",
    "BailingMoeV2ForCausalLM",
    "BailingMoeV2Model",
    "BailingMoeV2PreTrainedModel",
]
