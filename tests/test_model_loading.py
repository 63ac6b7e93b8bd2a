"""Ring 2.0 model: fp32 routing under autocast and bf16 loads, checkpoint layout safety, tuple outputs."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import pytest
import torch

from ring_trl.models.bailing_moe_v2 import BailingMoeV2ForCausalLM, BailingMoeV2Model
from ring_trl.models.bailing_moe_v2.modeling_bailing_moe_v2 import (
    BailingMoeV2Gate,
    CheckpointMismatchError,
)
from ring_trl.models.files import auto_map_for, copy_model_code
from ring_trl.models.reference import naive_logits, randomize_, toy_config


def _model(seed: int = 0, **overrides) -> BailingMoeV2ForCausalLM:
    torch.manual_seed(seed)
    return randomize_(BailingMoeV2ForCausalLM(toy_config(**overrides)).eval(), seed)


def _stored_dtypes(folder: Path) -> dict[str, str]:
    with open(folder / "model.safetensors", "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {name: entry["dtype"] for name, entry in header.items() if name != "__metadata__"}


def test_routing_under_bf16_autocast_equals_fp32_routing() -> None:
    config = toy_config(num_experts=32, n_group=8, topk_group=4, num_experts_per_tok=8, hidden_size=64)
    torch.manual_seed(0)
    gate = BailingMoeV2Gate(config)
    torch.nn.init.normal_(gate.weight, std=0.05)
    gate.expert_bias.copy_(torch.rand(config.num_experts) * 0.01)
    hidden = torch.randn(512, config.hidden_size)
    want_idx, want_weight, want_logits = gate(hidden)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got_idx, got_weight, got_logits = gate(hidden)
    assert got_logits.dtype == torch.float32 and got_weight.dtype == torch.float32
    torch.testing.assert_close(got_logits, want_logits, rtol=0, atol=0)
    assert torch.equal(got_idx, want_idx)
    torch.testing.assert_close(got_weight, want_weight, rtol=0, atol=0)


def test_bf16_load_keeps_router_in_fp32_and_saves_it_in_the_checkpoint_dtype(tmp_path: Path) -> None:
    fp32_checkpoint = tmp_path / "fp32"
    _model().save_pretrained(fp32_checkpoint)
    loaded = BailingMoeV2ForCausalLM.from_pretrained(fp32_checkpoint, dtype=torch.bfloat16)
    moe = loaded.model.layers[1].mlp
    assert moe.gate.weight.dtype == torch.float32 and moe.gate.expert_bias.dtype == torch.float32
    assert moe.experts.gate_up_proj.dtype == torch.bfloat16 and loaded.dtype == torch.bfloat16
    resaved = tmp_path / "resaved-from-fp32"
    loaded.save_pretrained(resaved)
    stored = _stored_dtypes(resaved)
    assert (
        stored["model.layers.1.mlp.gate.expert_bias"] == "F32"
        and stored["model.layers.1.mlp.gate.weight"] == "F32"
    )
    assert stored["model.layers.1.mlp.experts.3.up_proj.weight"] == "BF16"

    bf16_checkpoint = tmp_path / "bf16"
    _model().to(torch.bfloat16).save_pretrained(bf16_checkpoint)
    loaded = BailingMoeV2ForCausalLM.from_pretrained(bf16_checkpoint, dtype=torch.bfloat16)
    assert loaded.model.layers[2].mlp.gate.expert_bias.dtype == torch.float32
    loaded.save_pretrained(tmp_path / "resaved-from-bf16")
    stored = _stored_dtypes(tmp_path / "resaved-from-bf16")
    assert {stored["model.layers.2.mlp.gate.expert_bias"], stored["model.layers.2.mlp.gate.weight"]} == {
        "BF16"
    }
    assert json.loads((tmp_path / "resaved-from-bf16" / "config.json").read_text())["dtype"] == "bfloat16"


def _ring_v2_layout_checkpoint(folder: Path) -> BailingMoeV2ForCausalLM:
    """A checkpoint laid out like the Ring-V2 repo's code writes it: 3 main layers + 1 MTP layer, all counted in
    num_hidden_layers = 4, the MTP layer at index 3; config.json without any field of ours; our model code copied
    next to it (what a user does instead of `make prepare-model`)."""
    model = _model(seed=7, num_hidden_layers=4, mtp_layers_in_num_hidden_layers=True)
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("mtp_layers_in_num_hidden_layers")
    config["auto_map"] = auto_map_for()
    (folder / "config.json").write_text(json.dumps(config))
    copy_model_code(folder)
    return model


def test_ring_v2_layout_mtp_checkpoint_loads_directly_with_the_published_logits(tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    original = _ring_v2_layout_checkpoint(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert loaded.config.mtp_layers_in_num_hidden_layers is True and loaded.model.num_main_layers == 3
    ids = torch.randint(3, 96, (1, 9))
    want = naive_logits(load_file(tmp_path / "model.safetensors"), original.config, ids[0])
    torch.testing.assert_close(loaded(ids).logits[0], want, rtol=1e-5, atol=1e-5)
    # A config that claims the opposite convention is corrected by the weight names, the same way.
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "mtp_layers_in_num_hidden_layers": False}))
    again = BailingMoeV2ForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(again(ids).logits[0], want, rtol=1e-5, atol=1e-5)


def test_missing_or_unexpected_weights_are_a_one_line_error_naming_prepare_model(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    _model().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights.pop("model.layers.3.eh_proj.weight")
    weights["model.layers.9.attention.dense.weight"] = torch.zeros(2, 2)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError) as error:
        BailingMoeV2ForCausalLM.from_pretrained(tmp_path)
    message = str(error.value)
    assert "\n" not in message and "make prepare-model" in message
    assert "model.layers.3.eh_proj.weight" in message and "model.layers.9.attention.dense.weight" in message


def test_decoder_alone_loads_from_a_causal_lm_checkpoint(tmp_path: Path) -> None:
    model = _model()
    model.save_pretrained(tmp_path)
    decoder = BailingMoeV2Model.from_pretrained(tmp_path).eval()
    ids = torch.randint(3, 96, (1, 5))
    torch.testing.assert_close(decoder(ids).last_hidden_state, model.model(ids).last_hidden_state)


def _assert_same_outputs(as_tuple: tuple, as_dict) -> None:
    expected = as_dict.to_tuple()
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(expected)
    for got, want in zip(as_tuple, expected, strict=True):
        if isinstance(want, torch.Tensor):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        elif isinstance(want, tuple):
            for got_item, want_item in zip(got, want, strict=True):
                torch.testing.assert_close(got_item, want_item, rtol=0, atol=0)
        else:  # the cache
            assert type(got) is type(want)


def test_return_dict_false_from_the_call_or_the_config_gives_the_same_outputs_as_tuples() -> None:
    model = _model(mtp_loss_scaling_factor=0.3)
    ids = torch.randint(3, 96, (2, 6))
    flags = {"output_hidden_states": True, "output_router_logits": True, "use_cache": True}
    for module, extra in ((model, {"labels": ids}), (model.model, {"run_mtp": True})):
        as_dict = module(ids, **flags, **extra)
        _assert_same_outputs(module(ids, return_dict=False, **flags, **extra), as_dict)
        module.config.return_dict = False
        try:
            _assert_same_outputs(module(ids, **flags, **extra), as_dict)
            assert not isinstance(module(ids, return_dict=True, **flags, **extra), tuple)
        finally:
            module.config.return_dict = True


def test_every_expert_kernel_trains_under_bf16_autocast() -> None:
    """grouped_mm is not autocast-aware by itself: it must run in the autocast dtype like F.linear does."""
    ids = torch.randint(3, 96, (2, 7))
    losses = {}
    for implementation in ("grouped_mm", "sorted"):
        model = _model(expert_implementation=implementation).train()
        fp32_loss = model(ids, labels=ids).loss.detach()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, labels=ids).loss
        loss.backward()
        assert model.model.layers[1].mlp.experts.gate_up_proj.grad.dtype == torch.float32
        torch.testing.assert_close(loss.detach(), fp32_loss, rtol=2e-2, atol=2e-2)
        losses[implementation] = loss.detach()
    torch.testing.assert_close(losses["grouped_mm"], losses["sorted"], rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("context", ["bf16_autocast", "inference_mode", "gradient_checkpointing"])
def test_auto_expert_kernel_probe_runs_inside_autocast_inference_mode_and_checkpointing(
    context: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first `auto` forward decides the kernel once: under GRPO's bf16 autocast and activation checkpointing or
    generation's inference mode it must still decide (not crash, not cache a wrong `sorted`) and match `sorted`."""
    from ring_trl.models.bailing_moe_v2 import modeling_bailing_moe_v2 as modeling

    monkeypatch.setattr(modeling, "_GROUPED_MM_WORKS", {})
    ids = torch.randint(3, 96, (2, 7))
    scopes = {
        "bf16_autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
        "inference_mode": torch.inference_mode,
        "gradient_checkpointing": contextlib.nullcontext,
    }
    logits, grads = {}, {}
    for implementation in ("auto", "sorted"):
        model = _model(expert_implementation=implementation)
        if context == "gradient_checkpointing":
            model.train().gradient_checkpointing_enable({"use_reentrant": False})
        with scopes[context]():
            output = model(ids, labels=ids)
        if context == "gradient_checkpointing":
            output.loss.backward()
            grads[implementation] = model.model.layers[1].mlp.experts.gate_up_proj.grad
        logits[implementation] = output.logits.float()
    torch.testing.assert_close(logits["auto"], logits["sorted"], rtol=2e-2, atol=2e-2)
    if grads:
        torch.testing.assert_close(grads["auto"], grads["sorted"], rtol=1e-4, atol=1e-5)
    probed_dtype = torch.bfloat16 if context == "bf16_autocast" else torch.float32
    works_here = modeling._GROUPED_MM_WORKS[("cpu", probed_dtype)]
    modeling._GROUPED_MM_WORKS.clear()
    assert works_here == modeling.grouped_mm_available(torch.device("cpu"), probed_dtype)
