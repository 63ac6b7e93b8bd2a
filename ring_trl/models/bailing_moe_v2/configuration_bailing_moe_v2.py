"""Configuration for Ring 2.0 / Ling 2.0 (BailingMoeV2) models.

Self-contained (imports only transformers) so it can be copied next to a checkpoint and picked up through
`auto_map`. Field names and defaults follow the published config.json files so that those load unchanged.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

EXPERT_LAYOUTS = ("fused", "per_expert")
EXPERT_IMPLEMENTATIONS = ("auto", "grouped_mm", "sorted", "loop")


class BailingMoeV2Config(PretrainedConfig):
    """Ring/Ling 2.0 configuration.

    Besides the published fields it carries three switches of ours (all optional, safe to leave out):
    `expert_layout` ("fused": 3D expert weights, fast; "per_expert": one nn.Linear per projection so that
    bitsandbytes/PEFT can wrap them), `expert_implementation` (how fused experts are computed) and
    `mtp_layers_in_num_hidden_layers` (whether the checkpoint counts its MTP layers inside num_hidden_layers).
    """

    model_type = "bailing_moe"
    keys_to_ignore_at_inference = ["past_key_values"]  # noqa: RUF012

    def __init__(
        self,
        vocab_size: int = 157184,
        hidden_size: int = 2048,
        intermediate_size: int = 5120,
        num_hidden_layers: int = 20,
        num_attention_heads: int = 16,
        num_key_value_heads: int = 4,
        head_dim: int | None = 128,
        hidden_act: str = "silu",
        use_qkv_bias: bool = False,
        use_bias: bool = False,
        use_qk_norm: bool = True,
        rms_norm_eps: float = 1e-6,
        tie_word_embeddings: bool = False,
        embedding_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        output_dropout: float = 0.0,
        initializer_range: float = 0.02,
        max_position_embeddings: int = 32768,
        rope_theta: float = 600000.0,
        rope_scaling: dict[str, Any] | None = None,
        partial_rotary_factor: float = 0.5,
        use_cache: bool = True,
        pad_token_id: int | None = 156892,
        bos_token_id: int | None = 156891,
        eos_token_id: int | list[int] | None = 156892,
        num_experts: int = 256,
        num_shared_experts: int | None = 1,
        num_experts_per_tok: int = 8,
        n_group: int = 8,
        topk_group: int = 4,
        moe_intermediate_size: int = 512,
        first_k_dense_replace: int = 1,
        routed_scaling_factor: float = 2.5,
        score_function: str = "sigmoid",
        moe_router_enable_expert_bias: bool = True,
        norm_topk_prob: bool = True,
        output_router_logits: bool = False,
        num_nextn_predict_layers: int = 0,
        mtp_loss_scaling_factor: float = 0.0,
        expert_layout: str = "fused",
        expert_implementation: str = "auto",
        mtp_layers_in_num_hidden_layers: bool = False,
        **kwargs: Any,
    ) -> None:
        if expert_layout not in EXPERT_LAYOUTS:
            raise ValueError(f"expert_layout must be one of {EXPERT_LAYOUTS}, got {expert_layout!r}")
        if expert_implementation not in EXPERT_IMPLEMENTATIONS:
            raise ValueError(
                f"expert_implementation must be one of {EXPERT_IMPLEMENTATIONS}, got {expert_implementation!r}"
            )
        if score_function != "sigmoid":
            raise ValueError(
                f"only score_function='sigmoid' (Ring/Ling 2.0) is supported, got {score_function!r}"
            )
        if num_experts % n_group != 0:
            raise ValueError(f"num_experts ({num_experts}) must be divisible by n_group ({n_group})")
        if topk_group > n_group:
            raise ValueError(f"topk_group ({topk_group}) cannot exceed n_group ({n_group})")
        if num_experts_per_tok > topk_group * (num_experts // n_group):
            raise ValueError("num_experts_per_tok exceeds the experts available in topk_group groups")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim if head_dim is not None else hidden_size // num_attention_heads
        self.hidden_act = hidden_act
        self.use_qkv_bias = use_qkv_bias
        self.use_bias = use_bias
        self.use_qk_norm = use_qk_norm
        self.rms_norm_eps = rms_norm_eps
        self.embedding_dropout = embedding_dropout
        self.attention_dropout = attention_dropout
        self.output_dropout = output_dropout
        self.initializer_range = initializer_range
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.partial_rotary_factor = partial_rotary_factor
        self.use_cache = use_cache
        self.num_experts = num_experts
        self.num_shared_experts = num_shared_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.n_group = n_group
        self.topk_group = topk_group
        self.moe_intermediate_size = moe_intermediate_size
        self.first_k_dense_replace = first_k_dense_replace
        self.routed_scaling_factor = routed_scaling_factor
        self.score_function = score_function
        self.moe_router_enable_expert_bias = moe_router_enable_expert_bias
        self.norm_topk_prob = norm_topk_prob
        self.output_router_logits = output_router_logits
        self.num_nextn_predict_layers = num_nextn_predict_layers
        self.mtp_loss_scaling_factor = mtp_loss_scaling_factor
        self.expert_layout = expert_layout
        self.expert_implementation = expert_implementation
        self.mtp_layers_in_num_hidden_layers = mtp_layers_in_num_hidden_layers
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def num_main_layers(self) -> int:
        """Decoder layers used for next-token prediction (MTP layers excluded)."""
        if self.mtp_layers_in_num_hidden_layers:
            return self.num_hidden_layers - self.num_nextn_predict_layers
        return self.num_hidden_layers


class BailingMoeV2AliasConfig(BailingMoeV2Config):
    """The same configuration under the model_type "bailing_moe_v2" (some checkpoints and tools use it)."""

    model_type = "bailing_moe_v2"

    def __init__(self, **kwargs: Any) -> None:
        # An explicit __init__: transformers turns config subclasses without one into dataclasses whose generated
        # __init__ would bypass ours.
        super().__init__(**kwargs)
