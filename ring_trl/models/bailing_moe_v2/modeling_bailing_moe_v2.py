"""Ring 2.0 / Ling 2.0 (BailingMoeV2) for transformers 5.x.

Self-contained (imports only torch and transformers) so it can be copied next to a checkpoint and used through
`auto_map` with `trust_remote_code=True`. Module and parameter names follow the published checkpoints, so their
weights load unchanged; the numerics follow the published remote code (fp32 sigmoid routing with group limits,
partial rotary, per-head qk-norm, shared expert, MTP layers after the main stack).

Experts come in two layouts selected by `config.expert_layout`:
- "fused": two 3D parameters per MoE layer (`experts.gate_up_proj` [E, 2I, H], `experts.down_proj` [E, H, I]),
  computed with grouped GEMM where available. Published per-expert keys are fused at load time and split again
  on save (a weight conversion registered for the model type).
- "per_expert": `experts.{e}.{gate,up,down}_proj` nn.Linear modules, exactly the published layout, so that
  bitsandbytes can quantize and PEFT can adapt every expert.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import json
import os
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import ModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel

from .configuration_bailing_moe_v2 import BailingMoeV2Config

# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class BailingMoeV2ModelOutput(ModelOutput):
    """Decoder output; `mtp_hidden_states` is filled only when the MTP layers ran (training with labels)."""

    last_hidden_state: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    router_logits: tuple[torch.FloatTensor, ...] | None = None
    mtp_hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class BailingMoeV2CausalLMOutput(ModelOutput):
    """Causal-LM output; `mtp_loss` is the unscaled auxiliary loss of each MTP layer."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    router_logits: tuple[torch.FloatTensor, ...] | None = None
    aux_loss: torch.FloatTensor | None = None
    mtp_loss: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------
# Norms, rotary embedding, attention
# ----------------------------------------------------------------------------------------------------------------


class BailingMoeV2RMSNorm(nn.Module):
    """RMSNorm computed in fp32; the weight multiplies the result cast back to the input dtype (as published)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


def _rotary_inv_freq(config: BailingMoeV2Config) -> tuple[torch.Tensor, float]:
    """Inverse frequencies for the rotated part of each head (`head_dim * partial_rotary_factor` dims)."""
    rotary_dim = int(config.head_dim * config.partial_rotary_factor)
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64).to(torch.float32) / rotary_dim
    inv_freq = 1.0 / (config.rope_theta**exponents)
    scaling = config.rope_scaling or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type in (None, "default"):
        return inv_freq, 1.0
    if rope_type == "linear":
        return inv_freq / float(scaling["factor"]), 1.0
    if rope_type == "yarn":
        return _yarn_inv_freq(inv_freq, rotary_dim, config, scaling)
    raise ValueError(f"rope_scaling type {rope_type!r} is not supported (use default, linear or yarn)")


def _yarn_inv_freq(
    inv_freq: torch.Tensor, rotary_dim: int, config: BailingMoeV2Config, scaling: dict[str, Any]
) -> tuple[torch.Tensor, float]:
    """YaRN: blend interpolated and original frequencies by wavelength; scale attention by mscale."""
    import math

    factor = float(scaling["factor"])
    original_max = float(scaling.get("original_max_position_embeddings") or config.max_position_embeddings)
    beta_fast = float(scaling.get("beta_fast") or 32)
    beta_slow = float(scaling.get("beta_slow") or 1)
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        attention_factor = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0

    def correction_dim(num_rotations: float) -> float:
        return (rotary_dim * math.log(original_max / (num_rotations * 2 * math.pi))) / (
            2 * math.log(config.rope_theta)
        )

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), rotary_dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(rotary_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation_weight = 1 - ramp
    inv_freq = (inv_freq / factor) * (1 - extrapolation_weight) + inv_freq * extrapolation_weight
    return inv_freq, float(attention_factor)


class BailingMoeV2RotaryEmbedding(nn.Module):
    """cos/sin tables for the rotated slice of each head, computed in fp32."""

    def __init__(self, config: BailingMoeV2Config) -> None:
        super().__init__()
        inv_freq, self.attention_scaling = _rotary_inv_freq(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1).to(x.device)
        positions = position_ids[:, None, :].float()
        with torch.autocast(device_type=x.device.type if x.device.type != "mps" else "cpu", enabled=False):
            freqs = (inv_freq @ positions).transpose(1, 2)
            emb = torch.cat((freqs, freqs), dim=-1)
            cos = emb.cos() * self.attention_scaling
            sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_partial_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate the first `cos.shape[-1]` dims of each head of q and k ([B, heads, S, D]); pass the rest through."""
    cos = cos.unsqueeze(1)
    sin = sin.unsqueeze(1)
    rotary_dim = cos.shape[-1]

    def rotate(t: torch.Tensor) -> torch.Tensor:
        rotated, passed = t[..., :rotary_dim], t[..., rotary_dim:]
        return torch.cat((rotated * cos + _rotate_half(rotated) * sin, passed), dim=-1)

    return rotate(q), rotate(k)


def _repeat_kv(states: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return states
    batch, kv_heads, seq, dim = states.shape
    return (
        states[:, :, None].expand(batch, kv_heads, n_rep, seq, dim).reshape(batch, kv_heads * n_rep, seq, dim)
    )


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention (fp32 softmax); returns [B, S, heads, D] like the other backends."""
    key = _repeat_kv(key, module.num_key_value_groups)
    value = _repeat_kv(value, module.num_key_value_groups)
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask[:, :, :, : key.shape[-2]]
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


class BailingMoeV2Attention(nn.Module):
    """GQA attention with a fused QKV projection, per-head qk RMSNorm and partial rotary embedding."""

    def __init__(self, config: BailingMoeV2Config, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        self.query_key_value = nn.Linear(
            config.hidden_size,
            (self.num_heads + 2 * self.num_key_value_heads) * self.head_dim,
            bias=config.use_qkv_bias,
        )
        if config.use_qk_norm:
            self.query_layernorm = BailingMoeV2RMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.key_layernorm = BailingMoeV2RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.dense = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.use_bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq_len, _ = hidden_states.shape
        qkv = self.query_key_value(hidden_states).view(
            batch, seq_len, self.num_heads + 2 * self.num_key_value_heads, self.head_dim
        )
        query, key, value = qkv.split(
            [self.num_heads, self.num_key_value_heads, self.num_key_value_heads], dim=2
        )
        query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        if self.config.use_qk_norm:
            query = self.query_layernorm(query)
            key = self.key_layernorm(key)
        cos, sin = position_embeddings
        query, key = apply_partial_rotary(query, key, cos, sin)
        if past_key_values is not None:
            key, value = past_key_values.update(key, value, self.layer_idx)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(batch, seq_len, -1).contiguous()
        return self.dense(attn_output), attn_weights


# ----------------------------------------------------------------------------------------------------------------
# Feed-forward: dense MLP, router, experts, MoE block
# ----------------------------------------------------------------------------------------------------------------


class BailingMoeV2MLP(nn.Module):
    """SiLU-gated MLP (dense layers, shared expert, and each expert in the per-expert layout)."""

    def __init__(self, config: BailingMoeV2Config, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class BailingMoeV2Gate(nn.Module):
    """Sigmoid router with group-limited top-k; `expert_bias` steers selection only, never the weights.

    All of it runs in fp32 whatever the surrounding autocast or the model's dtype: the published code and the
    inference engines route in fp32, and bf16 routing picks a different expert set for a few percent of tokens.
    The weight and `expert_bias` are also kept in fp32 when the model is loaded in bf16/fp16
    (`_keep_in_fp32_modules_strict`).
    """

    def __init__(self, config: BailingMoeV2Config) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.num_experts = config.num_experts
        self.n_group = config.n_group
        self.topk_group = config.topk_group
        self.routed_scaling_factor = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.hidden_size))
        self.register_buffer("expert_bias", torch.zeros(config.num_experts))

    @torch.no_grad()
    def select_experts(self, selection_scores: torch.Tensor) -> torch.Tensor:
        """Indices [T, top_k]: keep the `topk_group` groups with the best top-2 sums, then top-k inside them."""
        tokens = selection_scores.shape[0]
        grouped = selection_scores.view(tokens, self.n_group, -1)
        group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)
        kept_groups = group_scores.topk(self.topk_group, dim=-1, sorted=False).indices
        group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept_groups, True)
        expert_mask = group_mask.unsqueeze(-1).expand_as(grouped).reshape(tokens, -1)
        masked = selection_scores.masked_fill(~expert_mask, float("-inf"))
        return masked.topk(self.top_k, dim=-1).indices

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (expert indices [T, k], fp32 weights [T, k], fp32 router logits [T, E])."""
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])
        with _autocast_off(flat.device):
            logits = F.linear(flat.float(), self.weight.float())
            scores = torch.sigmoid(logits)
            top_idx = self.select_experts(scores.detach() + self.expert_bias.float())
            top_weight = scores.gather(1, top_idx)
            if self.top_k > 1:
                top_weight = top_weight / (top_weight.sum(dim=-1, keepdim=True) + 1e-20)
        return top_idx, top_weight * self.routed_scaling_factor, logits


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context that disables autocast on `device` when it is on (and does nothing otherwise)."""
    if torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _compute_dtype(device: torch.device, weight_dtype: torch.dtype) -> torch.dtype:
    """The dtype a matmul runs in here: the autocast dtype when autocast is on (as F.linear would), else the weight's."""
    if torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return weight_dtype


def _grouped_mm_function() -> Callable[..., torch.Tensor] | None:
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


_GROUPED_MM_WORKS: dict[tuple[str, torch.dtype], bool] = {}


def grouped_mm_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this torch build's grouped GEMM runs on `device` in `dtype` and matches plain matmuls.

    Checked once per (device type, dtype) on a small problem, forward and backward: CUDA needs SM80+, and the CPU
    kernel of torch >= 2.9 runs too (in fp32 it gives bit-identical results to per-expert matmuls).
    """
    key = (device.type, dtype)
    if key not in _GROUPED_MM_WORKS:
        _GROUPED_MM_WORKS[key] = _probe_grouped_mm(device, dtype)
    return _GROUPED_MM_WORKS[key]


def _probe_grouped_mm(device: torch.device, dtype: torch.dtype) -> bool:
    grouped = _grouped_mm_function()
    if grouped is None or device.type not in ("cpu", "cuda"):
        return False
    if device.type == "cuda" and (
        not torch.cuda.is_available() or torch.cuda.get_device_capability(device) < (8, 0)
    ):
        return False
    # The first forward may run under autocast, inference mode or activation checkpointing, all thread-local: a
    # fresh thread sees none of them, so the probe neither changes dtype, nor fails to backpropagate (and caches
    # a wrong answer), nor saves tensors into a checkpointed forward that its recomputation would not save.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_grouped_mm_matches_matmuls, grouped, device, dtype).result()


def _grouped_mm_matches_matmuls(
    grouped: Callable[..., torch.Tensor], device: torch.device, dtype: torch.dtype
) -> bool:
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(12, 16, generator=generator).to(device=device, dtype=dtype).requires_grad_(True)
    weight = torch.randn(3, 16, 8, generator=generator).to(device=device, dtype=dtype)
    counts = [5, 0, 7]
    offsets = torch.tensor(counts, device=device).cumsum(0).to(torch.int32)
    try:
        with torch.enable_grad():
            out = grouped(rows, weight, offs=offsets)
            out.backward(torch.ones_like(out))
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    chunks = zip(rows.detach().split(counts), weight, strict=True)
    expected_out = torch.cat([chunk.float() @ expert.float() for chunk, expert in chunks])
    expected_grad = torch.cat(
        [expert.float().sum(1).expand(count, -1) for count, expert in zip(counts, weight, strict=True)]
    )
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    return torch.allclose(
        out.detach().float(), expected_out, atol=tolerance, rtol=tolerance
    ) and torch.allclose(rows.grad.float(), expected_grad, atol=tolerance, rtol=tolerance)


class ExpertDispatch:
    """The routed (token, slot) pairs of one MoE layer grouped by expert: one sort per layer, shared by the kernels.

    `order` lists the flattened pairs expert by expert, `tokens` the token of each of them, `counts` how many
    pairs each expert got; `weights` are the pairs' routing weights in the same order (fp32).
    """

    def __init__(self, top_idx: torch.Tensor, top_weight: torch.Tensor, num_experts: int) -> None:
        flat = top_idx.reshape(-1)
        self.num_tokens, self.top_k = top_idx.shape
        self.order = flat.argsort(stable=True)
        self.tokens = self.order // self.top_k
        self.counts = torch.bincount(flat, minlength=num_experts)
        self.weights = top_weight.reshape(-1).index_select(0, self.order)
        self._counts_list: list[int] | None = None

    @property
    def counts_list(self) -> list[int]:
        """Pairs per expert as Python ints (one device sync, cached)."""
        if self._counts_list is None:
            self._counts_list = self.counts.tolist()
        return self._counts_list

    def offsets(self) -> torch.Tensor:
        """Cumulative pair counts (int32), the group boundaries grouped GEMM takes."""
        return self.counts.cumsum(0).to(torch.int32)

    def gather(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The input row of every pair, expert by expert [T*k, H]."""
        return hidden_states.index_select(0, self.tokens)

    def per_expert(
        self, expert_forward: Callable[[int, torch.Tensor], torch.Tensor], rows: torch.Tensor
    ) -> torch.Tensor:
        """Run each expert on its contiguous block of rows (split once: backward builds one gradient, not one per
        expert); experts without tokens are skipped."""
        outputs = [
            expert_forward(expert, chunk)
            for expert, chunk in enumerate(rows.split(self.counts_list))
            if chunk.shape[0]
        ]
        if not outputs:
            return rows.new_zeros(rows.shape)
        return torch.cat(outputs, dim=0)

    def combine(self, expert_out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Weight every pair in fp32 and sum the k pairs of each token, as the published code does [T, H].

        On CPU `index_add_` adds straight into the output (deterministic there, and the fastest); on other devices
        its atomic adds would make the sum order vary between runs, so the pairs are put back in token order and
        reduced with one batched matmul.
        """
        if expert_out.device.type == "cpu":
            return self.combine_by_index_add(expert_out, dtype)
        return self.combine_in_token_order(expert_out, dtype)

    def combine_by_index_add(self, expert_out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        weighted = expert_out.float() * self.weights.unsqueeze(-1)
        summed = weighted.new_zeros(self.num_tokens, expert_out.shape[-1])
        return summed.index_add_(0, self.tokens, weighted).to(dtype)

    def combine_in_token_order(self, expert_out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        inverse = torch.empty_like(self.order)
        inverse[self.order] = torch.arange(self.order.numel(), device=self.order.device)
        in_token_order = expert_out.index_select(0, inverse).view(self.num_tokens, self.top_k, -1).float()
        slot_weights = self.weights.index_select(0, inverse).view(self.num_tokens, 1, self.top_k)
        return torch.bmm(slot_weights, in_token_order).view(self.num_tokens, -1).to(dtype)


class BailingMoeV2FusedExperts(nn.Module):
    """All experts of one layer as two 3D parameters, laid out like transformers' own MoE models.

    `gate_up_proj` holds each expert's gate and up projections stacked, so one matmul (or one grouped GEMM)
    computes both.
    """

    def __init__(self, config: BailingMoeV2Config) -> None:
        super().__init__()
        self.num_experts = config.num_experts
        self.intermediate_size = config.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(
            torch.empty(config.num_experts, 2 * config.moe_intermediate_size, config.hidden_size)
        )
        self.down_proj = nn.Parameter(
            torch.empty(config.num_experts, config.hidden_size, config.moe_intermediate_size)
        )
        self.act_fn = ACT2FN[config.hidden_act]
        self.implementation = config.expert_implementation

    def _activate(self, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.split(self.intermediate_size, dim=-1)
        return self.act_fn(gate) * up

    def _per_expert_forward(self) -> Callable[[int, torch.Tensor], torch.Tensor]:
        """Per-expert views via unbind: backward stacks the weight grads once instead of once per expert."""
        gate_up, down = self.gate_up_proj.unbind(0), self.down_proj.unbind(0)

        def expert_forward(expert: int, rows: torch.Tensor) -> torch.Tensor:
            return F.linear(self._activate(F.linear(rows, gate_up[expert])), down[expert])

        return expert_forward

    def resolve_implementation(self, device: torch.device, dtype: torch.dtype) -> str:
        """`auto`: grouped GEMM wherever it runs correctly (CUDA SM80+, CPU on torch >= 2.9), else `sorted`."""
        if self.implementation != "auto":
            return self.implementation
        return "grouped_mm" if grouped_mm_available(device, dtype) else "sorted"

    def _grouped_forward(self, rows: torch.Tensor, dispatch: ExpertDispatch) -> torch.Tensor:
        grouped = _grouped_mm_function()
        if grouped is None:
            raise RuntimeError("expert_implementation='grouped_mm' needs torch >= 2.8 (torch._grouped_mm)")
        dtype = _compute_dtype(rows.device, self.gate_up_proj.dtype)
        offsets = dispatch.offsets()
        with _autocast_off(rows.device):
            gate_up = grouped(rows.to(dtype), self.gate_up_proj.to(dtype).transpose(1, 2), offs=offsets)
            return grouped(self._activate(gate_up), self.down_proj.to(dtype).transpose(1, 2), offs=offsets)

    def forward(
        self, hidden_states: torch.Tensor, top_idx: torch.Tensor, top_weight: torch.Tensor
    ) -> torch.Tensor:
        implementation = self.resolve_implementation(
            hidden_states.device, _compute_dtype(hidden_states.device, self.gate_up_proj.dtype)
        )
        if implementation == "loop":
            return loop_expert_forward(
                self._per_expert_forward(), self.num_experts, hidden_states, top_idx, top_weight
            )
        dispatch = ExpertDispatch(top_idx, top_weight, self.num_experts)
        rows = dispatch.gather(hidden_states)
        if implementation == "grouped_mm":
            expert_out = self._grouped_forward(rows, dispatch)
        else:
            expert_out = dispatch.per_expert(self._per_expert_forward(), rows)
        return dispatch.combine(expert_out, hidden_states.dtype)


class BailingMoeV2PerExpertExperts(nn.ModuleList):
    """One BailingMoeV2MLP per expert (the published module tree): quantizable and LoRA-adaptable."""

    def __init__(self, config: BailingMoeV2Config) -> None:
        super().__init__(
            [BailingMoeV2MLP(config, config.moe_intermediate_size) for _ in range(config.num_experts)]
        )
        self.implementation = config.expert_implementation

    def _expert_forward(self, expert: int, rows: torch.Tensor) -> torch.Tensor:
        return self[expert](rows)

    def forward(
        self, hidden_states: torch.Tensor, top_idx: torch.Tensor, top_weight: torch.Tensor
    ) -> torch.Tensor:
        if self.implementation == "loop":
            return loop_expert_forward(self._expert_forward, len(self), hidden_states, top_idx, top_weight)
        dispatch = ExpertDispatch(top_idx, top_weight, len(self))
        expert_out = dispatch.per_expert(self._expert_forward, dispatch.gather(hidden_states))
        return dispatch.combine(expert_out, hidden_states.dtype)


def loop_expert_forward(
    expert_forward: Callable[[int, torch.Tensor], torch.Tensor],
    num_experts: int,
    hidden_states: torch.Tensor,
    top_idx: torch.Tensor,
    top_weight: torch.Tensor,
) -> torch.Tensor:
    """Reference: visit every expert with a boolean mask (the published training path); slow but obvious."""
    top_k = top_idx.shape[1]
    repeated = hidden_states.repeat_interleave(top_k, dim=0)
    flat_idx = top_idx.reshape(-1)
    out = torch.zeros_like(repeated)
    for expert in range(num_experts):
        mask = flat_idx == expert
        out[mask] = expert_forward(expert, repeated[mask]).to(out.dtype)
    weighted = out.view(*top_weight.shape, -1).float() * top_weight.unsqueeze(-1)
    return weighted.sum(dim=1).to(hidden_states.dtype)


class BailingMoeV2SparseMoeBlock(nn.Module):
    """Router + routed experts + shared expert. Registered as a ZeRO-3 leaf module (see the pretrained model)."""

    def __init__(self, config: BailingMoeV2Config) -> None:
        super().__init__()
        self.gate = BailingMoeV2Gate(config)
        if config.expert_layout == "fused":
            self.experts: nn.Module = BailingMoeV2FusedExperts(config)
        else:
            self.experts = BailingMoeV2PerExpertExperts(config)
        self.shared_experts = (
            BailingMoeV2MLP(config, config.moe_intermediate_size * config.num_shared_experts)
            if config.num_shared_experts
            else None
        )

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, seq_len, hidden = hidden_states.shape
        top_idx, top_weight, router_logits = self.gate(hidden_states)
        flat = hidden_states.reshape(-1, hidden)
        routed = self.experts(flat, top_idx, top_weight).view(batch, seq_len, hidden)
        if self.shared_experts is not None:
            routed = routed + self.shared_experts(hidden_states)
        return routed, router_logits


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------


class BailingMoeV2DecoderLayer(GradientCheckpointingLayer):
    """Pre-norm attention + (dense MLP for the first `first_k_dense_replace` layers, MoE otherwise)."""

    def __init__(self, config: BailingMoeV2Config, layer_idx: int) -> None:
        super().__init__()
        self.attention = BailingMoeV2Attention(config, layer_idx)
        self.mlp: nn.Module = (
            BailingMoeV2SparseMoeBlock(config)
            if layer_idx >= config.first_k_dense_replace
            else BailingMoeV2MLP(config, config.intermediate_size)
        )
        self.input_layernorm = BailingMoeV2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = BailingMoeV2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        residual = hidden_states
        attn_out, attn_weights = self.attention(
            self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            **kwargs,
        )
        hidden_states = residual + attn_out
        residual = hidden_states
        mlp_out = self.mlp(self.post_attention_layernorm(hidden_states))
        router_logits = None
        if isinstance(mlp_out, tuple):
            mlp_out, router_logits = mlp_out
        return residual + mlp_out, attn_weights, router_logits


class BailingMoeV2MTPLayer(GradientCheckpointingLayer):
    """Multi-token prediction layer: mixes the normed main hidden state with the next token's embedding."""

    def __init__(self, config: BailingMoeV2Config, layer_idx: int) -> None:
        super().__init__()
        self.enorm = BailingMoeV2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.hnorm = BailingMoeV2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)
        self.input_layernorm = BailingMoeV2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.attention = BailingMoeV2Attention(config, layer_idx)
        self.post_attention_layernorm = BailingMoeV2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = BailingMoeV2SparseMoeBlock(config)
        self.final_layernorm = BailingMoeV2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        next_embeds: torch.Tensor,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mixed = self.eh_proj(torch.cat([self.enorm(next_embeds), self.hnorm(hidden_states)], dim=-1))
        attn_out, _ = self.attention(
            self.input_layernorm(mixed),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            past_key_values=None,
            **kwargs,
        )
        hidden = mixed + attn_out
        mlp_out, router_logits = self.mlp(self.post_attention_layernorm(hidden))
        return self.final_layernorm(hidden + mlp_out), router_logits


# ----------------------------------------------------------------------------------------------------------------
# Load/save conversion for the fused layout
# ----------------------------------------------------------------------------------------------------------------


def fused_expert_conversions() -> list[Any]:
    """Weight conversions that fuse published per-expert keys into 3D tensors (and split them back on save)."""
    from transformers.core_model_loading import Concatenate, MergeModulelist, WeightConverter

    return [
        WeightConverter(
            source_patterns=["mlp.experts.*.gate_proj.weight", "mlp.experts.*.up_proj.weight"],
            target_patterns="mlp.experts.gate_up_proj",
            operations=[MergeModulelist(dim=0), Concatenate(dim=1)],
        ),
        WeightConverter(
            source_patterns="mlp.experts.*.down_proj.weight",
            target_patterns="mlp.experts.down_proj",
            operations=[MergeModulelist(dim=0)],
        ),
    ]


def register_expert_conversions(config: BailingMoeV2Config) -> None:
    """Point transformers' loader at the conversions this model's expert layout needs.

    The loader looks conversions up by model_type right after building the model, so registering here (from
    __init__) always matches the layout of the model being loaded.
    """
    from transformers.conversion_mapping import register_checkpoint_conversion_mapping

    conversions = fused_expert_conversions() if config.expert_layout == "fused" else []
    for model_type in {config.model_type, "bailing_moe", "bailing_moe_v2"}:
        register_checkpoint_conversion_mapping(model_type, conversions, overwrite=True)


def _register_zero3_leaf_modules(model: nn.Module) -> None:
    """Under DeepSpeed ZeRO-3, treat each MoE block as a leaf so ranks routing to different experts don't hang."""
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled
    except ImportError:  # pragma: no cover
        return
    if not is_deepspeed_zero3_enabled():
        return
    try:
        from deepspeed.utils import set_z3_leaf_modules
    except ImportError:  # pragma: no cover - ZeRO-3 without deepspeed cannot happen
        return
    set_z3_leaf_modules(model, [BailingMoeV2SparseMoeBlock])


# ----------------------------------------------------------------------------------------------------------------
# Loading safety: which MTP convention a checkpoint uses, and no silently missing or unexpected weights
# ----------------------------------------------------------------------------------------------------------------

PREPARE_HINT = (
    "`make prepare-model MODEL=<checkpoint>` (python -m ring_trl.models.prepare) writes a folder that loads"
)
_MTP_WEIGHT = re.compile(r"^(?:model\.)?layers\.(\d+)\.eh_proj\.weight$")
# Router tensors kept in fp32 in memory; they are written back in the dtype the checkpoint stored them in.
ROUTER_KEEP_FP32 = ("mlp.gate.weight", "mlp.gate.expert_bias")
_SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F64": torch.float64,
}


class CheckpointMismatchError(ValueError):
    """A Ring checkpoint whose weight names do not fit this model; the message is one line and says what to do."""


def mtp_layers_counted_in_num_hidden_layers(
    num_hidden_layers: int, num_mtp_layers: int, weight_names: Iterable[str]
) -> bool | None:
    """Where the checkpoint's MTP layers sit: True when their indices are < num_hidden_layers (the Ring-V2 repo's
    code counts them inside), False when they follow the main stack (the hub checkpoints), None without MTP."""
    if num_mtp_layers == 0:
        return None
    indices = {int(match.group(1)) for name in weight_names if (match := _MTP_WEIGHT.match(name))}
    if not indices:
        return None
    if min(indices) >= num_hidden_layers:
        return False
    if max(indices) < num_hidden_layers:
        return True
    raise CheckpointMismatchError(
        f"MTP layers {sorted(indices)} straddle num_hidden_layers={num_hidden_layers}: the checkpoint's layout is "
        f"unclear; {PREPARE_HINT}"
    )


def _safetensors_header(path: str) -> dict[str, str]:
    """Tensor name -> safetensors dtype code, read from the file header only (no tensor data)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return {name: entry["dtype"] for name, entry in header.items()}


def _checkpoint_tensors(pretrained: Any, kwargs: dict[str, Any]) -> dict[str, str] | None:
    """Name -> dtype code of every tensor in a safetensors checkpoint (local folder or hub cache); None if unknown."""
    if pretrained is None or kwargs.get("state_dict") is not None or kwargs.get("gguf_file"):
        return None
    if os.path.isfile(str(pretrained)):
        return None
    from transformers.utils import cached_file

    hub_kwargs = {
        key: kwargs[key]
        for key in (
            "cache_dir",
            "force_download",
            "proxies",
            "token",
            "revision",
            "local_files_only",
            "subfolder",
        )
        if kwargs.get(key) is not None
    }
    variant = kwargs.get("variant")

    def resolve(name: str) -> str | None:
        if variant:
            stem, suffix = name.split(".", 1)
            name = f"{stem}.{variant}.{suffix}"
        return cached_file(
            pretrained,
            name,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub_kwargs,
        )

    try:
        index = resolve("model.safetensors.index.json")
        if index is not None:
            with open(index, encoding="utf-8") as handle:
                shards = sorted(set(json.load(handle)["weight_map"].values()))
            files = [cached_file(pretrained, shard, **hub_kwargs) for shard in shards]
        else:
            single = resolve("model.safetensors")
            if single is None:
                return None
            files = [single]
        tensors: dict[str, str] = {}
        for file in files:
            tensors.update(_safetensors_header(file))
        return tensors
    except (OSError, ValueError, KeyError, struct.error):
        return None


def _checkpoint_config_counts(pretrained: Any, kwargs: dict[str, Any]) -> tuple[int, int] | None:
    """(num_hidden_layers, num_nextn_predict_layers) of the config this load will use."""
    from transformers import PretrainedConfig

    config = kwargs.get("config")
    if isinstance(config, PretrainedConfig):
        return config.num_hidden_layers, getattr(config, "num_nextn_predict_layers", 0) or 0
    folder = os.path.join(str(pretrained), kwargs.get("subfolder") or "")
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            fields = json.load(handle)
    except (OSError, ValueError):
        return None
    layers = kwargs.get("num_hidden_layers", fields.get("num_hidden_layers"))
    mtp = kwargs.get("num_nextn_predict_layers", fields.get("num_nextn_predict_layers")) or 0
    return (layers, mtp) if isinstance(layers, int) and isinstance(mtp, int) else None


def _with_mtp_convention(pretrained: Any, kwargs: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """Set `mtp_layers_in_num_hidden_layers` from where the checkpoint's MTP weights sit (the weights decide)."""
    counts = _checkpoint_config_counts(pretrained, kwargs)
    if counts is None:
        return kwargs
    inside = mtp_layers_counted_in_num_hidden_layers(*counts, names)
    if inside is None:
        return kwargs
    kwargs = dict(kwargs)
    config = kwargs.get("config")
    if config is not None and not isinstance(config, (str, os.PathLike)):
        if bool(getattr(config, "mtp_layers_in_num_hidden_layers", False)) != inside:
            config = copy.deepcopy(config)
            config.mtp_layers_in_num_hidden_layers = inside
            kwargs["config"] = config
    else:
        kwargs["mtp_layers_in_num_hidden_layers"] = inside
    return kwargs


def _check_loaded_keys(model: nn.Module, pretrained: Any, info: dict[str, Any]) -> None:
    """Raise CheckpointMismatchError when a weight was missing or left over (transformers would only warn)."""
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    if not isinstance(model, BailingMoeV2ForCausalLM):
        # The bare decoder may be loaded from a causal-LM checkpoint: its head is not part of it.
        unexpected = [key for key in unexpected if not key.startswith("lm_head.")]
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    raise CheckpointMismatchError(
        f"{pretrained}: the checkpoint does not match this Ring model: {'; '.join(parts)}. "
        f"Missing weights would be random. {PREPARE_HINT} on our model code."
    )


def _as_stored(name: str, tensor: torch.Tensor, stored: dict[str, torch.dtype]) -> torch.Tensor:
    dtype = stored.get(name.removeprefix("model."))
    return tensor if dtype is None or tensor.dtype == dtype else tensor.to(dtype)


def _router_dtypes(tensors: dict[str, str]) -> dict[str, torch.dtype]:
    """The stored dtype of each router tensor, to write it back the same way."""
    return {
        name.removeprefix("model."): _SAFETENSORS_DTYPES[code]
        for name, code in tensors.items()
        if name.endswith(ROUTER_KEEP_FP32) and code in _SAFETENSORS_DTYPES
    }


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


class BailingMoeV2PreTrainedModel(PreTrainedModel):
    config_class = BailingMoeV2Config
    config: BailingMoeV2Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["BailingMoeV2DecoderLayer", "BailingMoeV2MTPLayer"]  # noqa: RUF012
    _skip_keys_device_placement = ["past_key_values"]  # noqa: RUF012
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = False
    _supports_attention_backend = True
    _can_compile_fullgraph = False
    # Routing runs in fp32 (see BailingMoeV2Gate); loading in bf16/fp16 keeps these tensors in fp32 too.
    _keep_in_fp32_modules_strict = list(ROUTER_KEEP_FP32)  # noqa: RUF012

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
        """transformers' loader, made strict for Ring checkpoints.

        Before loading: the MTP convention is read off the checkpoint's weight names (so a Ring-V2-repo layout
        loads correctly next to a hub layout). After: a missing or unexpected weight raises
        CheckpointMismatchError instead of a warning and random weights. The stored dtype of the router tensors
        is remembered so that save_pretrained writes them back unchanged.
        """
        tensors = _checkpoint_tensors(pretrained_model_name_or_path, kwargs)
        if tensors is not None:
            kwargs = _with_mtp_convention(pretrained_model_name_or_path, kwargs, tensors)
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        _check_loaded_keys(model, pretrained_model_name_or_path, info)
        model._checkpoint_router_dtypes = _router_dtypes(tensors) if tensors else {}
        return (model, info) if wants_info else model

    def save_pretrained(
        self, save_directory: Any, is_main_process: bool = True, state_dict: dict | None = None, **kwargs: Any
    ) -> Any:
        """Save with the router tensors in the dtype the loaded checkpoint stored them in (kept fp32 in memory)."""
        stored = getattr(self, "_checkpoint_router_dtypes", None)
        if (
            stored
            and not getattr(self, "_hf_peft_config_loaded", False)
            and getattr(self, "hf_quantizer", None) is None
        ):
            state_dict = self.state_dict() if state_dict is None else state_dict
            state_dict = {name: _as_stored(name, tensor, stored) for name, tensor in state_dict.items()}
        return super().save_pretrained(
            save_directory, is_main_process=is_main_process, state_dict=state_dict, **kwargs
        )

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, BailingMoeV2Gate):
            init.normal_(module.weight, mean=0.0, std=std)
            init.zeros_(module.expert_bias)
        elif isinstance(module, BailingMoeV2FusedExperts):
            init.normal_(module.gate_up_proj, mean=0.0, std=std)
            init.normal_(module.down_proj, mean=0.0, std=std)
        elif isinstance(module, BailingMoeV2RotaryEmbedding):
            # A non-persistent buffer: from_pretrained builds it on the meta device, so recompute it here.
            inv_freq, _ = _rotary_inv_freq(self.config)
            init.copy_(module.inv_freq, inv_freq)

    def post_init(self) -> None:
        super().post_init()
        # What save_pretrained reverts for a model built from scratch (from_pretrained overwrites it with the
        # conversions it used); set per instance so that the last model built cannot change how this one saves.
        self._weight_conversions = fused_expert_conversions() if self.config.expert_layout == "fused" else []
        _register_zero3_leaf_modules(self)


def _position_ids_from_mask(attention_mask: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Positions that skip left padding: the count of real tokens before each position (padding gets 0)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)[:, -seq_len:]


class BailingMoeV2Model(BailingMoeV2PreTrainedModel):
    """Embeddings, main decoder stack, final norm, and the MTP layers (run only when asked)."""

    def __init__(self, config: BailingMoeV2Config) -> None:
        super().__init__(config)
        register_expert_conversions(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.num_main_layers = config.num_main_layers
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        layers: list[nn.Module] = [BailingMoeV2DecoderLayer(config, i) for i in range(self.num_main_layers)]
        layers += [
            BailingMoeV2MTPLayer(config, self.num_main_layers + j)
            for j in range(config.num_nextn_predict_layers)
        ]
        self.layers = nn.ModuleList(layers)
        self.norm = BailingMoeV2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = BailingMoeV2RotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.word_embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_router_logits: bool | None = None,
        run_mtp: bool = False,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BailingMoeV2ModelOutput | tuple:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        output_attentions = (
            output_attentions if output_attentions is not None else self.config.output_attentions
        )
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_router_logits = (
            output_router_logits if output_router_logits is not None else self.config.output_router_logits
        )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        seq_len = inputs_embeds.shape[1]
        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2:
                position_ids = _position_ids_from_mask(attention_mask, seq_len)
            else:
                past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
                position_ids = torch.arange(seq_len, device=inputs_embeds.device).unsqueeze(0) + past_seen
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            position_ids=position_ids,
        )
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)

        all_hidden: tuple[torch.Tensor, ...] = ()
        all_attn: tuple[torch.Tensor, ...] = ()
        all_router: tuple[torch.Tensor, ...] = ()
        hidden_states = inputs_embeds
        for layer in self.layers[: self.num_main_layers]:
            if output_hidden_states:
                all_hidden += (hidden_states,)
            hidden_states, attn_weights, router_logits = layer(
                hidden_states,
                position_embeddings=position_embeddings,
                attention_mask=causal_mask,
                past_key_values=past_key_values,
                output_attentions=output_attentions,
                **kwargs,
            )
            if output_attentions and attn_weights is not None:
                all_attn += (attn_weights,)
            if output_router_logits and router_logits is not None:
                all_router += (router_logits,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden += (hidden_states,)

        mtp_hidden: tuple[torch.Tensor, ...] | None = None
        if run_mtp and self.config.num_nextn_predict_layers > 0:
            mtp_hidden = ()
            next_embeds = inputs_embeds
            mtp_state = hidden_states
            for layer in self.layers[self.num_main_layers :]:
                next_embeds = _shift_left(next_embeds)
                mtp_state, router_logits = layer(
                    next_embeds,
                    mtp_state,
                    position_embeddings=position_embeddings,
                    attention_mask=causal_mask,
                    **kwargs,
                )
                mtp_hidden += (mtp_state,)
                if output_router_logits:
                    all_router += (router_logits,)

        output = BailingMoeV2ModelOutput(
            last_hidden_state=hidden_states,
            past_key_values=past_key_values if use_cache else None,
            hidden_states=all_hidden or None,
            attentions=all_attn or None,
            router_logits=all_router or None,
            mtp_hidden_states=mtp_hidden,
        )
        return output if _wants_dict(return_dict, self.config) else output.to_tuple()


def _wants_dict(return_dict: bool | None, config: BailingMoeV2Config) -> bool:
    """The call's `return_dict` when given, else the config's (transformers' convention; default True)."""
    if return_dict is not None:
        return return_dict
    return getattr(config, "return_dict", True) is not False


def _shift_left(tensor: torch.Tensor) -> torch.Tensor:
    """Move every position one step to the left along dim 1 and zero the last one (next-token inputs)."""
    shifted = torch.roll(tensor, shifts=-1, dims=1).clone()
    shifted[:, -1] = 0
    return shifted


class BailingMoeV2ForCausalLM(BailingMoeV2PreTrainedModel, GenerationMixin):
    """Causal LM head; adds `mtp_loss_scaling_factor * mtp_loss` to the loss when that factor is > 0."""

    _tied_weights_keys = {"lm_head.weight": "model.word_embeddings.weight"}  # noqa: RUF012

    def __init__(self, config: BailingMoeV2Config) -> None:
        super().__init__(config)
        self.model = BailingMoeV2Model(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def get_decoder(self) -> BailingMoeV2Model:
        return self.model

    def set_decoder(self, decoder: BailingMoeV2Model) -> None:
        self.model = decoder

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_router_logits: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BailingMoeV2CausalLMOutput | tuple:
        run_mtp = (
            labels is not None
            and self.config.num_nextn_predict_layers > 0
            and self.config.mtp_loss_scaling_factor > 0
        )
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            output_router_logits=output_router_logits,
            run_mtp=run_mtp,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :]).float()

        loss = None
        mtp_losses: tuple[torch.Tensor, ...] | None = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
            if run_mtp and outputs.mtp_hidden_states:
                mtp_losses = ()
                mtp_labels = labels
                for mtp_state in outputs.mtp_hidden_states:
                    mtp_labels = _shift_labels_left(mtp_labels)
                    mtp_logits = self.lm_head(mtp_state).float()
                    mtp_loss = self.loss_function(
                        logits=mtp_logits, labels=mtp_labels, vocab_size=self.config.vocab_size, **kwargs
                    )
                    mtp_losses += (mtp_loss,)
                    loss = loss + self.config.mtp_loss_scaling_factor * mtp_loss

        result = BailingMoeV2CausalLMOutput(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            router_logits=outputs.router_logits,
            mtp_loss=mtp_losses,
        )
        return result if _wants_dict(return_dict, self.config) else result.to_tuple()


def _shift_labels_left(labels: torch.Tensor) -> torch.Tensor:
    """Labels for the next MTP depth: one more token ahead, the freed last position ignored (-100)."""
    shifted = torch.roll(labels, shifts=-1, dims=-1).clone()
    shifted[..., -1] = -100
    return shifted


__all__ = [
    "BailingMoeV2ForCausalLM",
    "BailingMoeV2Model",
    "BailingMoeV2PreTrainedModel",
]
