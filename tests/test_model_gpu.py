"""Ring 2.0 model on a CUDA GPU: the bf16 grouped GEMM path `auto` picks there, and bf16 loads (skipped on CPU)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ring_trl.models.bailing_moe_v2 import BailingMoeV2ForCausalLM
from ring_trl.models.bailing_moe_v2.modeling_bailing_moe_v2 import BailingMoeV2SparseMoeBlock
from ring_trl.models.reference import randomize_, toy_config

pytestmark = pytest.mark.gpu


def _block(config) -> BailingMoeV2SparseMoeBlock:
    torch.manual_seed(0)
    block = BailingMoeV2SparseMoeBlock(config).cuda()
    with torch.no_grad():
        for name, parameter in block.named_parameters():
            parameter.normal_(0.0, 0.02 if name == "gate.weight" else parameter.shape[-1] ** -0.5)
    return block


def _forward_backward(block, hidden: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = hidden.detach().requires_grad_(True)
    out, _ = block(hidden)
    out.backward(grad.to(out.dtype))
    return out.detach().float(), hidden.grad.float()


def test_auto_picks_grouped_mm_in_bf16_and_it_matches_sorted_and_the_fp32_reference() -> None:
    config = toy_config(
        hidden_size=512,
        moe_intermediate_size=256,
        num_experts=64,
        num_experts_per_tok=8,
        n_group=8,
        topk_group=4,
    )
    reference = _block(copy.deepcopy(config))
    reference.experts.implementation = "sorted"
    hidden = torch.randn(2, 1024, config.hidden_size, device="cuda").bfloat16().float()
    grad = torch.randn_like(hidden).bfloat16().float()
    want_out, want_grad = _forward_backward(reference, hidden, grad)

    results = {}
    for implementation in ("auto", "sorted"):
        block = copy.deepcopy(reference).bfloat16()
        block.gate = copy.deepcopy(reference.gate)  # a bf16 load keeps the router in fp32
        block.experts.implementation = implementation
        resolved = block.experts.resolve_implementation(hidden.device, torch.bfloat16)
        assert resolved == ("grouped_mm" if implementation == "auto" else "sorted")
        results[implementation] = _forward_backward(block, hidden.bfloat16(), grad)
        top_idx, _, _ = block.gate(hidden.bfloat16())
        want_idx, _, _ = reference.gate(hidden)
        assert torch.equal(top_idx.sort(-1).values, want_idx.sort(-1).values)
    for out, input_grad in results.values():
        assert (out - want_out).abs().max() <= 2e-2 * want_out.abs().max()
        assert (input_grad - want_grad).abs().max() <= 3e-2 * want_grad.abs().max()
    grouped, sliced = results["auto"][0], results["sorted"][0]
    assert (grouped - sliced).abs().max() <= 1e-2 * want_out.abs().max()


def test_autocast_on_cuda_routes_in_fp32() -> None:
    block = _block(toy_config(num_experts=32, n_group=8, topk_group=4, num_experts_per_tok=8))
    hidden = torch.randn(4096, block.gate.weight.shape[1], device="cuda")
    want = block.gate(hidden)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = block.gate(hidden)
    assert got[2].dtype == torch.float32
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


def test_bf16_cuda_load_keeps_the_router_fp32_and_generates(tmp_path: Path) -> None:
    torch.manual_seed(0)
    randomize_(BailingMoeV2ForCausalLM(toy_config()), 0).save_pretrained(tmp_path)
    model = BailingMoeV2ForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16, device_map="cuda").eval()
    gate = model.model.layers[1].mlp.gate
    assert gate.weight.dtype == torch.float32 and gate.expert_bias.dtype == torch.float32
    assert model.model.layers[1].mlp.experts.gate_up_proj.dtype == torch.bfloat16
    reference = BailingMoeV2ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.randint(3, 96, (2, 12))
    with torch.no_grad():
        got = model(ids.cuda()).logits.float().cpu()
        want = reference(ids).logits
    assert (got - want).abs().max() <= 5e-2 * want.abs().max()
    out = model.generate(ids.cuda(), max_new_tokens=6, min_new_tokens=6, do_sample=False, eos_token_id=None)
    assert out.shape == (2, 18)
