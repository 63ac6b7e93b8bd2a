"""An independent, deliberately naive fp32 Ring 2.0 forward pass over a published-layout state dict.

Written straight from the architecture description (no code shared with modeling_bailing_moe_v2), token by token
and expert by expert, so tests can check the real implementation against it. Slow: toy sizes only.
"""

from __future__ import annotations

import math
from typing import Any

import torch

Tensor = torch.Tensor


def _rms(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return weight * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def _silu_mlp(x: Tensor, state: dict[str, Tensor], prefix: str) -> Tensor:
    gate = x @ state[f"{prefix}.gate_proj.weight"].T
    up = x @ state[f"{prefix}.up_proj.weight"].T
    return (gate * torch.sigmoid(gate) * up) @ state[f"{prefix}.down_proj.weight"].T


def _rotate(x: Tensor, position: int, rotary_dim: int, theta: float) -> Tensor:
    """Rotate pairs (i, i + rotary_dim/2) of the first rotary_dim dims of one head vector."""
    out = x.clone()
    half = rotary_dim // 2
    for i in range(half):
        angle = position / (theta ** (2 * i / rotary_dim))
        c, s = math.cos(angle), math.sin(angle)
        a, b = x[..., i], x[..., i + half]
        out[..., i] = a * c - b * s
        out[..., i + half] = b * c + a * s
    return out


def _attention(x: Tensor, state: dict[str, Tensor], prefix: str, cfg: Any) -> Tensor:
    seq, _ = x.shape
    heads, kv_heads, dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    rotary_dim = int(dim * cfg.partial_rotary_factor)
    qkv = (x @ state[f"{prefix}.query_key_value.weight"].T).view(seq, heads + 2 * kv_heads, dim)
    q, k, v = qkv[:, :heads], qkv[:, heads : heads + kv_heads], qkv[:, heads + kv_heads :]
    if cfg.use_qk_norm:
        q = _rms(q, state[f"{prefix}.query_layernorm.weight"], cfg.rms_norm_eps)
        k = _rms(k, state[f"{prefix}.key_layernorm.weight"], cfg.rms_norm_eps)
    q = torch.stack([_rotate(q[t], t, rotary_dim, cfg.rope_theta) for t in range(seq)])
    k = torch.stack([_rotate(k[t], t, rotary_dim, cfg.rope_theta) for t in range(seq)])
    group = heads // kv_heads
    out = torch.zeros(seq, heads, dim)
    for h in range(heads):
        kh, vh = k[:, h // group], v[:, h // group]
        for t in range(seq):
            scores = (kh[: t + 1] @ q[t, h]) / math.sqrt(dim)
            out[t, h] = torch.softmax(scores, dim=0) @ vh[: t + 1]
    return out.reshape(seq, heads * dim) @ state[f"{prefix}.dense.weight"].T


def route_token(scores: Tensor, bias: Tensor, cfg: Any) -> tuple[list[int], list[float]]:
    """Group-limited top-k for one token: returns chosen experts and their normalised, scaled weights."""
    per_group = cfg.num_experts // cfg.n_group
    selection = scores + bias
    group_scores = []
    for g in range(cfg.n_group):
        members = sorted(selection[g * per_group : (g + 1) * per_group].tolist(), reverse=True)
        group_scores.append(members[0] + members[1])
    groups = sorted(range(cfg.n_group), key=lambda g: group_scores[g], reverse=True)[: cfg.topk_group]
    allowed = [e for g in groups for e in range(g * per_group, (g + 1) * per_group)]
    chosen = sorted(allowed, key=lambda e: selection[e].item(), reverse=True)[: cfg.num_experts_per_tok]
    raw = [scores[e].item() for e in chosen]
    total = sum(raw) if cfg.num_experts_per_tok > 1 else 1.0
    return chosen, [w / (total + 1e-20) * cfg.routed_scaling_factor for w in raw]


def _moe(x: Tensor, state: dict[str, Tensor], prefix: str, cfg: Any) -> Tensor:
    scores = torch.sigmoid(x @ state[f"{prefix}.gate.weight"].T)
    bias = state[f"{prefix}.gate.expert_bias"]
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        experts, weights = route_token(scores[t], bias, cfg)
        for expert, weight in zip(experts, weights, strict=True):
            out[t] += weight * _silu_mlp(x[t], state, f"{prefix}.experts.{expert}")
    if cfg.num_shared_experts:
        out = out + _silu_mlp(x, state, f"{prefix}.shared_experts")
    return out


@torch.no_grad()
def naive_logits(state: dict[str, Tensor], cfg: Any, input_ids: Tensor) -> Tensor:
    """Logits [S, V] for one unpadded sequence, from a published-layout fp32 state dict."""
    state = {name: tensor.float() for name, tensor in state.items()}
    x = state["model.word_embeddings.weight"][input_ids]
    main_layers = cfg.num_hidden_layers - (
        cfg.num_nextn_predict_layers if cfg.mtp_layers_in_num_hidden_layers else 0
    )
    for i in range(main_layers):
        prefix = f"model.layers.{i}"
        h = _rms(x, state[f"{prefix}.input_layernorm.weight"], cfg.rms_norm_eps)
        x = x + _attention(h, state, f"{prefix}.attention", cfg)
        h = _rms(x, state[f"{prefix}.post_attention_layernorm.weight"], cfg.rms_norm_eps)
        if i < cfg.first_k_dense_replace:
            x = x + _silu_mlp(h, state, f"{prefix}.mlp")
        else:
            x = x + _moe(h, state, f"{prefix}.mlp", cfg)
    x = _rms(x, state["model.norm.weight"], cfg.rms_norm_eps)
    return x @ state["lm_head.weight"].T


def toy_config(**overrides: Any):
    """A Ring-shaped config small enough for naive loops: 2 MoE layers, 16 experts in 4 groups, one MTP layer."""
    from ring_trl.models.bailing_moe_v2 import BailingMoeV2Config

    fields: dict[str, Any] = {
        "vocab_size": 96,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_experts": 16,
        "num_experts_per_tok": 4,
        "n_group": 4,
        "topk_group": 2,
        "moe_intermediate_size": 16,
        "num_shared_experts": 1,
        "first_k_dense_replace": 1,
        "num_nextn_predict_layers": 1,
        "initializer_range": 0.2,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "max_position_embeddings": 256,
    }
    fields.update(overrides)
    return BailingMoeV2Config(**fields)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give norms and router biases random values too, so no parameter hides behind its default of 1 or 0."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                tensor.copy_(1 + 0.2 * torch.randn(tensor.shape, generator=generator))
            elif name.endswith("expert_bias"):
                tensor.copy_(0.1 * torch.rand(tensor.shape, generator=generator))
    return model
