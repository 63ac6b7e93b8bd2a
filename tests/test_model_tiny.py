"""The tiny Ring model folder, and `prepare` turning a downloaded checkpoint into one that uses our code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ring_trl.models.prepare import PrepareError, main, prepare


def test_tiny_model_loads_offline_and_generates(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_bailing_moe_v2.BailingMoeV2ForCausalLM"
    assert config["first_k_dense_replace"] == 1 and config["num_nextn_predict_layers"] == 1
    assert (config["num_experts"], config["n_group"], config["topk_group"]) == (16, 4, 2)
    assert config["partial_rotary_factor"] == 0.5 and config["use_qk_norm"] is True
    with safe_open(str(tiny_model_dir / "model.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
    assert "model.layers.1.mlp.experts.15.down_proj.weight" in keys
    assert "model.layers.3.eh_proj.weight" in keys  # the MTP layer, after the 3 main layers
    assert not any("gate_up_proj" in key for key in keys)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, trust_remote_code=True)
    assert 1000 < len(tokenizer) <= model.config.vocab_size
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token == "<|startoftext|>"
    for marker in (
        "<role>",
        "</role>",
        "<|role_end|>",
        "<think>",
        "</think>",
        "<tool_call>",
        "</tool_response>",
    ):
        assert len(tokenizer(marker, add_special_tokens=False).input_ids) == 1, marker
    assert tokenizer.tokenize("123") == ["1", "2", "3"]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<role>HUMAN</role>What is 2 + 3?<role>ASSISTANT</role><think>\n"
    inputs = tokenizer([prompt, "1 + 1 ="], return_tensors="pt", padding=True, padding_side="left")
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] > inputs.input_ids.shape[1]


SELF_CONTAINED_CHECK = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert "ring_trl" not in sys.modules
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)
ids = tokenizer("12 + 35 =", return_tensors="pt")
out = model.generate(**ids, max_new_tokens=4, do_sample=False)
print(out.shape[1] - ids.input_ids.shape[1])
"""


def test_tiny_model_folder_is_self_contained(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Without ring_trl imported, auto_map must load the copied code (what LLaMA-Factory/TRL do)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", SELF_CONTAINED_CHECK, str(tiny_model_dir)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "4"


@pytest.mark.slow
def test_tiny_model_is_deterministic(tiny_model_dir: Path, tmp_path: Path, repo_root: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "ring_trl.models.tiny", "--output", str(tmp_path / "again")],
        check=True,
        cwd=repo_root,
        capture_output=True,
    )
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (tmp_path / "again" / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name


def test_prepare_links_weights_and_installs_our_code(tiny_model_dir: Path, tmp_path: Path) -> None:
    downloaded = tmp_path / "Ring-mini-2.0"
    downloaded.mkdir()
    for item in tiny_model_dir.iterdir():
        if item.suffix != ".py":
            (downloaded / item.name).write_bytes(item.read_bytes())
    config = json.loads((downloaded / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_bailing_moe_v2.SomethingElse"}
    config["custom_field"] = [1, 2]
    (downloaded / "config.json").write_text(json.dumps(config))

    out = prepare(str(downloaded), tmp_path / "prepared", chat_format="ring_v2_sft")
    assert (out / "model.safetensors").is_symlink()
    assert (out / "model.safetensors").resolve() == (downloaded / "model.safetensors").resolve()
    assert (out / "tokenizer.json").is_symlink()
    assert not (out / "modeling_bailing_moe_v2.py").is_symlink()
    new_config = json.loads((out / "config.json").read_text())
    assert new_config["auto_map"]["AutoModelForCausalLM"] == "modeling_bailing_moe_v2.BailingMoeV2ForCausalLM"
    assert new_config["custom_field"] == [1, 2] and new_config["mtp_layers_in_num_hidden_layers"] is False
    template = (Path(__file__).resolve().parents[1] / "ring_trl/chat_templates/ring_v2_sft.jinja").read_text()
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == template
    # ring_v2_sft is not built into LLaMA-Factory: the prepared tokenizer carries the hook that registers it.
    assert (out / "tokenization_ring_lf.py").is_file()
    assert tokenizer_config["auto_map"]["AutoTokenizer"][1] == "tokenization_ring_lf.RingTokenizerFast"

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, trust_remote_code=True)
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(model(ids).logits, original(ids).logits)
    tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    assert tokenizer.chat_template == template

    with pytest.raises(PrepareError, match="already exists"):
        prepare(str(downloaded), tmp_path / "prepared")


def test_prepare_missing_hub_id_says_what_to_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    code = main(["inclusionAI/Ring-mini-2.0", "--output", str(tmp_path / "x")])
    assert code == 2
    assert "huggingface-cli download inclusionAI/Ring-mini-2.0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_prepare_rejects_other_architectures(tmp_path: Path) -> None:
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2}))
    with pytest.raises(PrepareError, match=r"config\.json: model_type is 'llama'"):
        prepare(str(folder), tmp_path / "out")


def test_prepare_can_switch_to_the_per_expert_layout_for_qlora(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = prepare(str(tiny_model_dir), tmp_path / "per-expert", expert_layout="per_expert")
    assert json.loads((out / "config.json").read_text())["expert_layout"] == "per_expert"

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    linear_experts = [name for name, module in model.named_modules() if name.endswith("experts.0.gate_proj")]
    assert linear_experts, "per_expert layout must expose one nn.Linear per expert projection"
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, trust_remote_code=True)
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(model(ids).logits, original(ids).logits)
