"""Ring 2.0 model: routing, expert implementations and layouts, checkpoint key layout, numerics."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ring_trl.models.bailing_moe_v2 import BailingMoeV2ForCausalLM
from ring_trl.models.bailing_moe_v2.modeling_bailing_moe_v2 import (
    BailingMoeV2Gate,
    BailingMoeV2SparseMoeBlock,
)
from ring_trl.models.reference import naive_logits, randomize_, route_token, toy_config


def _model(seed: int = 0, **overrides) -> BailingMoeV2ForCausalLM:
    torch.manual_seed(seed)
    return randomize_(BailingMoeV2ForCausalLM(toy_config(**overrides)).eval(), seed)


def test_group_limited_routing_stays_in_selected_groups_and_weights_sum_to_scale() -> None:
    config = toy_config(routed_scaling_factor=2.5)
    torch.manual_seed(0)
    gate = BailingMoeV2Gate(config)
    torch.nn.init.normal_(gate.weight, std=1.0)
    gate.expert_bias.copy_(torch.rand(config.num_experts) * 0.5)
    hidden = torch.randn(64, config.hidden_size)
    top_idx, top_weight, logits = gate(hidden)

    per_group = config.num_experts // config.n_group
    selection = torch.sigmoid(logits) + gate.expert_bias
    group_scores = selection.view(64, config.n_group, per_group).topk(2, dim=-1).values.sum(-1)
    kept = group_scores.topk(config.topk_group, dim=-1).indices
    for token in range(64):
        groups_of_choice = set((top_idx[token] // per_group).tolist())
        assert groups_of_choice <= set(kept[token].tolist())
        assert len(set(top_idx[token].tolist())) == config.num_experts_per_tok
    torch.testing.assert_close(top_weight.sum(-1), torch.full((64,), 2.5))
    # Weights come from the unbiased sigmoid scores, the bias only steers the choice.
    raw = torch.sigmoid(logits).gather(1, top_idx)
    torch.testing.assert_close(top_weight, raw / raw.sum(-1, keepdim=True) * 2.5)
    for token in range(8):
        experts, weights = route_token(torch.sigmoid(logits[token]), gate.expert_bias, config)
        assert sorted(experts) == sorted(top_idx[token].tolist())
        assert sorted(weights) == pytest.approx(sorted(top_weight[token].tolist()), rel=1e-5)


def test_expert_bias_changes_selection() -> None:
    config = toy_config()
    torch.manual_seed(1)
    gate = BailingMoeV2Gate(config)
    torch.nn.init.normal_(gate.weight, std=1.0)
    hidden = torch.randn(32, config.hidden_size)
    before, _, _ = gate(hidden)
    gate.expert_bias[5] = 10.0
    after, _, _ = gate(hidden)
    assert (after == 5).any(dim=-1).all()
    assert not torch.equal(before, after)


def _copy_fused_to_per_expert(
    fused: BailingMoeV2SparseMoeBlock, per_expert: BailingMoeV2SparseMoeBlock
) -> None:
    inter = fused.experts.intermediate_size
    with torch.no_grad():
        per_expert.gate.load_state_dict(fused.gate.state_dict())
        per_expert.shared_experts.load_state_dict(fused.shared_experts.state_dict())
        for e, expert in enumerate(per_expert.experts):
            expert.gate_proj.weight.copy_(fused.experts.gate_up_proj[e, :inter])
            expert.up_proj.weight.copy_(fused.experts.gate_up_proj[e, inter:])
            expert.down_proj.weight.copy_(fused.experts.down_proj[e])


def _run_block(block: BailingMoeV2SparseMoeBlock, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = hidden.clone().requires_grad_(True)
    out, _ = block(hidden)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), hidden.grad


@pytest.mark.parametrize("implementation", ["sorted", "loop", "grouped_mm", "auto"])
def test_expert_implementations_and_layouts_agree(implementation: str) -> None:
    config = toy_config(
        hidden_size=64, moe_intermediate_size=32, expert_layout="fused", expert_implementation="loop"
    )
    torch.manual_seed(0)
    reference = BailingMoeV2SparseMoeBlock(config)
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    hidden = torch.randn(3, 7, config.hidden_size)
    ref_out, ref_grad = _run_block(reference, hidden)

    candidate = copy.deepcopy(reference)
    candidate.zero_grad()
    candidate.experts.implementation = implementation
    if implementation == "grouped_mm":
        try:
            out, grad = _run_block(candidate, hidden)
        except (RuntimeError, NotImplementedError) as error:
            pytest.skip(f"grouped_mm not runnable on this device/build: {error}")
    else:
        out, grad = _run_block(candidate, hidden)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(candidate.experts.gate_up_proj.grad, reference.experts.gate_up_proj.grad)
    torch.testing.assert_close(candidate.experts.down_proj.grad, reference.experts.down_proj.grad)

    per_expert = BailingMoeV2SparseMoeBlock(
        toy_config(hidden_size=64, moe_intermediate_size=32, expert_layout="per_expert")
    )
    _copy_fused_to_per_expert(reference, per_expert)
    out, grad = _run_block(per_expert, hidden)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)
    inter = config.moe_intermediate_size
    for e in range(config.num_experts):
        torch.testing.assert_close(
            per_expert.experts[e].gate_proj.weight.grad, reference.experts.gate_up_proj.grad[e, :inter]
        )
        torch.testing.assert_close(
            per_expert.experts[e].down_proj.weight.grad, reference.experts.down_proj.grad[e]
        )


def _autograd_node_names(tensor: torch.Tensor) -> list[str]:
    names, seen, stack = [], set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("layout", ["fused", "per_expert"])
def test_sorted_experts_split_their_rows_once_instead_of_slicing_per_expert(layout: str) -> None:
    """Each per-expert slice used to get its own full-size, zero-filled gradient in backward (most of the step)."""
    config = toy_config(hidden_size=64, expert_layout=layout, expert_implementation="sorted")
    torch.manual_seed(0)
    block = BailingMoeV2SparseMoeBlock(config)
    for parameter in block.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    out, _ = block(torch.randn(2, 9, config.hidden_size, requires_grad=True))
    nodes = _autograd_node_names(out)
    assert "SliceBackward0" not in nodes
    assert nodes.count("SplitWithSizesBackward0") == 1


def test_both_ways_of_combining_expert_outputs_agree() -> None:
    """CPU sums with index_add_, other devices in token order with a batched matmul: same values and grads."""
    from ring_trl.models.bailing_moe_v2.modeling_bailing_moe_v2 import ExpertDispatch

    torch.manual_seed(0)
    top_idx = torch.rand(13, 16).topk(4, dim=-1).indices
    weights, outputs = torch.rand(13, 4), torch.randn(13 * 4, 8).bfloat16()
    results = []
    for method in ("combine_by_index_add", "combine_in_token_order"):
        top_weight = weights.clone().requires_grad_(True)
        expert_out = outputs.clone().requires_grad_(True)
        dispatch = ExpertDispatch(top_idx, top_weight, num_experts=16)
        out = getattr(dispatch, method)(expert_out, torch.bfloat16)
        assert out.dtype == torch.bfloat16
        out.float().square().sum().backward()
        results.append((out.float(), top_weight.grad, expert_out.grad.float()))
    for first, second in zip(*results, strict=True):
        torch.testing.assert_close(first, second, rtol=1e-2, atol=1e-2)


def _disk_keys(folder: Path) -> set[str]:
    keys: set[str] = set()
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            keys.update(handle.keys())
    return keys


def _published_keys(config) -> set[str]:
    """Every tensor name a published checkpoint of this shape has (MTP layers after the main stack)."""
    keys = {"model.word_embeddings.weight", "model.norm.weight", "lm_head.weight"}
    attention = ["query_key_value", "dense"]
    for i in range(config.num_hidden_layers + config.num_nextn_predict_layers):
        p = f"model.layers.{i}"
        keys |= {f"{p}.attention.{name}.weight" for name in attention}
        keys |= {f"{p}.attention.query_layernorm.weight", f"{p}.attention.key_layernorm.weight"}
        keys |= {f"{p}.input_layernorm.weight", f"{p}.post_attention_layernorm.weight"}
        projections = ("gate_proj", "up_proj", "down_proj")
        if i < config.first_k_dense_replace:
            keys |= {f"{p}.mlp.{proj}.weight" for proj in projections}
            continue
        keys |= {f"{p}.mlp.gate.weight", f"{p}.mlp.gate.expert_bias"}
        keys |= {f"{p}.mlp.shared_experts.{proj}.weight" for proj in projections}
        keys |= {
            f"{p}.mlp.experts.{e}.{proj}.weight" for e in range(config.num_experts) for proj in projections
        }
        if i >= config.num_hidden_layers:
            keys |= {f"{p}.{name}.weight" for name in ("enorm", "hnorm", "eh_proj", "final_layernorm")}
    return keys


@pytest.mark.parametrize("save_layout", ["fused", "per_expert"])
def test_save_load_round_trip_uses_published_keys(tmp_path: Path, save_layout: str) -> None:
    model = _model(expert_layout=save_layout)
    model.save_pretrained(tmp_path)
    assert _disk_keys(tmp_path) == _published_keys(model.config)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        expert_3 = handle.get_tensor("model.layers.2.mlp.experts.11.up_proj.weight")
    ids = torch.randint(3, 96, (2, 9))
    expected = model(ids).logits
    for load_layout in ("fused", "per_expert"):
        loaded = BailingMoeV2ForCausalLM.from_pretrained(tmp_path, expert_layout=load_layout).eval()
        torch.testing.assert_close(loaded(ids).logits, expected, rtol=1e-5, atol=1e-5)
        experts = loaded.model.layers[2].mlp.experts
        if load_layout == "fused":
            inter = loaded.config.moe_intermediate_size
            torch.testing.assert_close(experts.gate_up_proj[11, inter:], expert_3)
        else:
            torch.testing.assert_close(experts[11].up_proj.weight, expert_3)
        resaved = tmp_path / f"resaved-{load_layout}"
        loaded.save_pretrained(resaved)
        assert _disk_keys(resaved) == _published_keys(model.config)


def test_saving_is_not_affected_by_models_built_later(tmp_path: Path) -> None:
    per_expert = _model(expert_layout="per_expert")
    fused = _model(expert_layout="fused")
    per_expert.save_pretrained(tmp_path / "per_expert")
    _model(expert_layout="per_expert")
    fused.save_pretrained(tmp_path / "fused")
    assert _disk_keys(tmp_path / "per_expert") == _published_keys(per_expert.config)
    assert _disk_keys(tmp_path / "fused") == _published_keys(fused.config)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_logits_match_naive_reference(attn: str) -> None:
    model = _model(seed=3, expert_layout="per_expert", attn_implementation=attn)
    ids = torch.randint(3, 96, (1, 11))
    got = model(ids).logits[0]
    want = naive_logits(model.state_dict(), model.config, ids[0])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    fused = BailingMoeV2ForCausalLM(toy_config(expert_layout="fused", attn_implementation=attn)).eval()
    fused.load_state_dict(_fuse(model.state_dict(), model.config), strict=True)
    torch.testing.assert_close(fused(ids).logits[0], want, rtol=1e-5, atol=1e-5)


def _fuse(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    fused: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".mlp.experts." not in key:
            fused[key] = value
    for i in range(config.first_k_dense_replace, config.num_hidden_layers + config.num_nextn_predict_layers):
        p = f"model.layers.{i}.mlp.experts"
        experts = range(config.num_experts)
        fused[f"{p}.gate_up_proj"] = torch.stack(
            [
                torch.cat([state[f"{p}.{e}.gate_proj.weight"], state[f"{p}.{e}.up_proj.weight"]])
                for e in experts
            ]
        )
        fused[f"{p}.down_proj"] = torch.stack([state[f"{p}.{e}.down_proj.weight"] for e in experts])
    return fused


def test_router_logits_and_mtp_layers_in_num_hidden_layers(tmp_path: Path) -> None:
    model = _model()
    out = model(torch.randint(3, 96, (2, 5)), output_router_logits=True)
    assert len(out.router_logits) == model.config.num_hidden_layers - model.config.first_k_dense_replace
    assert out.router_logits[0].shape == (10, model.config.num_experts)

    inside = _model(num_hidden_layers=4, mtp_layers_in_num_hidden_layers=True)
    assert inside.model.num_main_layers == 3
    assert type(inside.model.layers[3]).__name__ == "BailingMoeV2MTPLayer"
    inside.save_pretrained(tmp_path)
    assert "model.layers.3.eh_proj.weight" in _disk_keys(tmp_path)
    assert not any(key.startswith("model.layers.4.") for key in _disk_keys(tmp_path))


def test_yarn_rope_matches_transformers() -> None:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from ring_trl.models.bailing_moe_v2.modeling_bailing_moe_v2 import _rotary_inv_freq

    config = toy_config(
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
        max_position_embeddings=256,
    )
    ours, our_scale = _rotary_inv_freq(config)
    theirs, their_scale = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
    torch.testing.assert_close(ours, theirs)
    assert our_scale == pytest.approx(their_scale)
    assert ours.numel() == int(config.head_dim * config.partial_rotary_factor) // 2


def test_model_type_alias_bailing_moe_v2_loads(tmp_path: Path) -> None:
    import json

    from transformers import AutoModelForCausalLM

    import ring_trl.models  # noqa: F401  (registers the Auto classes)

    model = _model()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "bailing_moe"
    config["model_type"] = "bailing_moe_v2"
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(3, 96, (1, 6))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
