"""Ring 2.0 model training features: MTP loss, gradient checkpointing, LoRA, 4-bit experts, ZeRO-3 leaves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ring_trl.models.bailing_moe_v2 import BailingMoeV2ForCausalLM
from ring_trl.models.bailing_moe_v2.modeling_bailing_moe_v2 import BailingMoeV2SparseMoeBlock
from ring_trl.models.reference import randomize_, toy_config


def _model(seed: int = 0, **overrides) -> BailingMoeV2ForCausalLM:
    torch.manual_seed(seed)
    return randomize_(BailingMoeV2ForCausalLM(toy_config(**overrides)), seed)


def _mtp_grad_norm(model: BailingMoeV2ForCausalLM) -> float:
    mtp = model.model.layers[model.model.num_main_layers]
    return sum(float(p.grad.norm()) for p in mtp.parameters() if p.grad is not None)


def test_mtp_loss_only_when_scaling_factor_positive() -> None:
    ids = torch.randint(3, 96, (2, 10))
    plain = _model(mtp_loss_scaling_factor=0.0).train()
    out = plain(ids, labels=ids)
    assert out.mtp_loss is None
    out.loss.backward()
    assert _mtp_grad_norm(plain) == 0.0

    with_mtp = _model(mtp_loss_scaling_factor=0.3).train()
    out = with_mtp(ids, labels=ids)
    assert out.mtp_loss is not None and len(out.mtp_loss) == 1
    base = plain(ids, labels=ids).loss  # same seed: identical weights, so the difference is the MTP term
    torch.testing.assert_close(out.loss, base + 0.3 * out.mtp_loss[0])
    out.loss.backward()
    assert _mtp_grad_norm(with_mtp) > 0.0


def test_generation_never_runs_mtp_layers() -> None:
    model = _model(mtp_loss_scaling_factor=0.3).eval()
    calls = []
    model.model.layers[-1].register_forward_hook(lambda *args: calls.append(1))
    model.generate(torch.randint(3, 96, (1, 4)), max_new_tokens=3, do_sample=False, eos_token_id=None)
    model(torch.randint(3, 96, (1, 4)))
    assert calls == []


def test_gradient_checkpointing_gives_same_loss_and_grads() -> None:
    ids = torch.randint(3, 96, (2, 12))
    grads = []
    for checkpointing in (False, True):
        model = _model(seed=4, mtp_loss_scaling_factor=0.2).train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        loss = model(ids, labels=ids).loss
        loss.backward()
        grads.append((loss.detach(), model.model.layers[1].attention.query_key_value.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_lora_on_attention_and_experts_trains() -> None:
    from peft import LoraConfig, get_peft_model

    model = _model(seed=5, expert_layout="per_expert")
    targets = ["query_key_value", "dense", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    lora_names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any(".mlp.experts.7.up_proj.lora_A" in n for n in lora_names)
    assert all("lora_" in n for n in lora_names)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-2)
    ids = torch.randint(3, 96, (2, 12))
    peft_model.train()
    losses = []
    for _ in range(6):
        loss = peft_model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


def test_bitsandbytes_4bit_quantizes_per_expert_layout(tmp_path: Path) -> None:
    bnb = pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig

    _model(seed=6, hidden_size=64, moe_intermediate_size=64, intermediate_size=64).save_pretrained(tmp_path)
    quantized = BailingMoeV2ForCausalLM.from_pretrained(
        tmp_path,
        expert_layout="per_expert",
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
        dtype=torch.float32,
    )
    expert = quantized.model.layers[1].mlp.experts[3]
    assert isinstance(expert.gate_proj, bnb.nn.Linear4bit)
    assert isinstance(quantized.model.layers[2].mlp.experts[15].down_proj, bnb.nn.Linear4bit)
    assert isinstance(quantized.model.layers[1].attention.query_key_value, bnb.nn.Linear4bit)
    out = quantized(torch.randint(3, 96, (1, 6)))
    assert torch.isfinite(out.logits).all()


def test_zero3_registers_moe_blocks_as_leaf_modules() -> None:
    deepspeed_utils = pytest.importorskip("deepspeed.utils")
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    plain = _model()
    assert not getattr(plain.model.layers[1].mlp, "_z3_leaf", False)
    ds_config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    try:
        model = _model()
        leaves = deepspeed_utils.get_z3_leaf_modules(model)
    finally:
        unset_hf_deepspeed_config()
        del ds_config
    assert leaves and all(isinstance(m, BailingMoeV2SparseMoeBlock) for m in leaves)
    assert len(leaves) == sum(isinstance(m, BailingMoeV2SparseMoeBlock) for m in model.modules())
