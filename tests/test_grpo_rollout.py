"""Rollout capture: HF-generate sampling log-probs, the engine-mismatch option, and the vLLM server path
(driven through a fake of the vLLM client only; the trainer, TRL and the model are real)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessorList,
    TemperatureLogitsWarper,
)

from ring_trl.compat import ensure_warnings_issued
from ring_trl.grpo.config import IcePopGRPOConfig
from ring_trl.grpo.rollout import SampledTokenLogprobRecorder, completion_mask_after_eos, rollout_engine
from ring_trl.grpo.trainer import SAMPLING_LOGPS_KEY, IcePopGRPOTrainer

BATCH = 8


def _reward(prompts, completions, completion_ids, **_):
    return [float(len(ids) % 4) for ids in completion_ids]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, trust_remote_code=True, dtype=torch.float32)
    ensure_warnings_issued(model)
    model.train()
    return model, tokenizer


def _trainer(tiny, tmp_path: Path, **overrides) -> IcePopGRPOTrainer:
    model, tokenizer = tiny
    settings = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": BATCH,
        "num_generations": 4,
        "max_prompt_length": 32,
        "max_completion_length": 16,
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        "seed": 0,
        **overrides,
    }
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": f"What is {i} * 3?"}]} for i in range(16)]
    )
    trainer = IcePopGRPOTrainer(
        model=model,
        reward_funcs=[_reward],
        args=IcePopGRPOConfig(**settings),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def _rows(trainer: IcePopGRPOTrainer) -> list[dict]:
    return [trainer.train_dataset[i // 4] for i in range(BATCH)]


def test_recorder_sees_exactly_the_sampled_distribution(tiny) -> None:
    model, tokenizer = tiny
    prompts = [
        "<role>HUMAN</role>hello<role>ASSISTANT</role><think>\n",
        "<role>HUMAN</role>2+2?<role>ASSISTANT</role>",
    ]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    recorder = SampledTokenLogprobRecorder()
    config = GenerationConfig(
        max_new_tokens=12, do_sample=True, top_k=0, top_p=1.0, pad_token_id=tokenizer.pad_token_id
    )
    with torch.no_grad():
        out = model.generate(
            **encoded,
            generation_config=config,
            logits_processor=LogitsProcessorList([TemperatureLogitsWarper(0.7), recorder]),
            output_scores=True,
            return_dict_in_generate=True,
        )
    prompt_length = encoded["input_ids"].size(1)
    recorded = recorder.collect(out.sequences, prompt_length)
    sampled = out.sequences[:, prompt_length:]
    expected = torch.stack(
        [
            torch.log_softmax(s.float(), -1).gather(-1, sampled[:, i : i + 1]).squeeze(-1)
            for i, s in enumerate(out.scores)
        ],
        dim=1,
    )
    assert recorded.shape == sampled.shape
    torch.testing.assert_close(recorded, expected, rtol=0, atol=0)
    # temperature is inside the recorded distribution: it differs from the T=1 log-probs
    plain = torch.stack(
        [
            torch.log_softmax(s.float() * 0.7, -1).gather(-1, sampled[:, i : i + 1]).squeeze(-1)
            for i, s in enumerate(out.scores)
        ],
        dim=1,
    )
    assert not torch.allclose(recorded, plain)


def test_completion_mask_after_eos() -> None:
    ids = torch.tensor([[5, 9, 2, 9], [5, 5, 5, 5], [9, 1, 1, 1]])
    assert completion_mask_after_eos(ids, eos_token_id=9).tolist() == [
        [1, 1, 0, 0],
        [1, 1, 1, 1],
        [1, 0, 0, 0],
    ]


def _masked_frac_after_one_batch(trainer: IcePopGRPOTrainer) -> dict[str, float]:
    torch.manual_seed(0)
    batch = trainer._generate_and_score_completions(_rows(trainer))
    trainer._compute_loss(trainer.model, batch)
    return {
        k.removeprefix("icepop/"): v[-1]
        for k, v in trainer._metrics["train"].items()
        if k.startswith("icepop/")
    }


def test_rollout_precision_option_creates_a_masked_fraction(tiny, tmp_path: Path) -> None:
    # Narrow: with the router in fp32 under autocast (issue 13), bf16 rollouts move token ratios by under 1%.
    band = {"icepop_alpha": 0.998, "icepop_beta": 1.002}
    same_engine = _masked_frac_after_one_batch(_trainer(tiny, tmp_path / "a", **band))
    assert same_engine["masked_frac"] == 0.0
    assert same_engine["logp_diff_max"] < 1e-3
    other_engine = _masked_frac_after_one_batch(_trainer(tiny, tmp_path / "b", rollout_dtype="bf16", **band))
    assert other_engine["masked_frac"] > 0.0
    assert other_engine["logp_diff_max"] > 10 * same_engine["logp_diff_max"]
    assert other_engine["mismatch_kl"] > same_engine["mismatch_kl"]


def test_rollout_attention_option_is_applied_and_restored(tiny) -> None:
    model, _ = tiny
    before = model.config._attn_implementation
    other = "eager" if before != "eager" else "sdpa"
    with rollout_engine(model, dtype="bf16", attn_implementation=other):
        assert model.config._attn_implementation == other
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    assert model.config._attn_implementation == before
    assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"top_p": 0.9}, "top_p"),
        ({"top_k": 50}, "top_k"),
        ({"icepop_alpha": 1.5}, "icepop_alpha"),
        ({"use_vllm": True, "vllm_mode": "server", "temperature": 0.7}, "raw"),
        ({"rollout_dtype": "int8"}, "rollout_dtype"),
        # generation_kwargs override the fields (as in TRL): they are checked, not silently reset
        ({"generation_kwargs": {"top_p": 0.9}}, r"generation_kwargs\.top_p"),
        ({"generation_kwargs": {"top_k": 50, "top_p": 0.9}}, r"generation_kwargs\.top_k"),
        ({"generation_kwargs": {"typical_p": 0.5}}, r"generation_kwargs\.typical_p"),
        ({"generation_kwargs": {"no_repeat_ngram_size": 2}}, r"generation_kwargs\.no_repeat_ngram_size"),
        (
            {"icepop": False, "generation_kwargs": {"epsilon_cutoff": 0.1}},
            r"generation_kwargs\.epsilon_cutoff",
        ),
    ],
)
def test_config_refuses_settings_that_bias_the_ratio(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IcePopGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", **overrides)


def _rollout(trainer: IcePopGRPOTrainer, seed: int = 0) -> tuple[list[list[int]], list[list[float]] | None]:
    torch.manual_seed(seed)
    prompts = [row["prompt"] for row in _rows(trainer)]
    _, completion_ids, _, logps, _ = trainer._generate(prompts, None)
    return completion_ids, logps


def test_icepop_on_and_off_sample_the_same_tokens(tiny, tmp_path: Path) -> None:
    """Turning IcePop on must not change the sampling itself (TRL's top_k=None became top-k 50 with it off)."""
    for temperature in (1.0, 0.7):
        on = _trainer(tiny, tmp_path / "on", temperature=temperature)
        off = _trainer(tiny, tmp_path / "off", temperature=temperature, icepop=False)
        tokens_on, logps_on = _rollout(on)
        tokens_off, _ = _rollout(off)
        assert tokens_on == tokens_off, f"temperature {temperature}"
        assert logps_on is not None and sum(len(row) for row in tokens_on) > BATCH


def test_checkpoint_generation_config_cannot_change_what_icepop_measures(
    tiny, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A checkpoint whose generation_config.json narrows sampling samples exactly like one that does not."""
    configured_dir = tmp_path / "configured"
    shutil.copytree(tiny_model_dir, configured_dir)
    settings = json.loads((configured_dir / "generation_config.json").read_text())
    settings.update({"top_k": 5, "top_p": 0.5, "min_p": 0.3, "typical_p": 0.5, "no_repeat_ngram_size": 1})
    (configured_dir / "generation_config.json").write_text(json.dumps(settings))
    configured = AutoModelForCausalLM.from_pretrained(
        configured_dir, trust_remote_code=True, dtype=torch.float32
    )
    assert configured.generation_config.min_p == 0.3  # transformers did read it
    ensure_warnings_issued(configured)
    configured.train()
    plain_tokens, plain_logps = _rollout(_trainer(tiny, tmp_path / "plain"))
    trainer = _trainer((configured, tiny[1]), tmp_path / "cfg")
    tokens, logps = _rollout(trainer)
    assert tokens == plain_tokens
    assert logps is not None and plain_logps is not None
    for row, plain_row in zip(logps, plain_logps, strict=True):
        assert row == pytest.approx(plain_row, abs=1e-5)
    assert configured.generation_config.min_p == 0.3  # the checkpoint's own config is left as it was


def test_sampling_settings_follow_trl_precedence_and_generate_order(tmp_path: Path) -> None:
    """IcePop off: generation_kwargs override the fields (as in TRL), TRL's top_k=None means no top-k, and the
    processors run in the order `generate` would use."""
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    config = IcePopGRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        icepop=False,
        top_p=0.9,
        generation_kwargs={"top_p": 0.5, "temperature": 0.7, "use_cache": True},
    )
    settings = config.sampling
    assert (settings.temperature, settings.top_k, settings.top_p) == (0.7, 0, 0.5)
    assert [type(p) for p in settings.processors()] == [TemperatureLogitsWarper, TopPLogitsWarper]
    with_top_k = IcePopGRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", icepop=False, top_k=5
    )
    assert [type(p) for p in with_top_k.sampling.processors()] == [TopKLogitsWarper]


def test_config_replaces_tis_with_icepop_and_off_switch_keeps_trl(tmp_path: Path) -> None:
    on = IcePopGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, use_vllm=True, report_to="none")
    assert on.vllm_importance_sampling_correction is False
    off = IcePopGRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        use_vllm=True,
        icepop=False,
        top_p=0.9,
        report_to="none",
    )
    assert off.vllm_importance_sampling_correction is True


class FakeVLLMServerClient:
    """Stands in for trl.extras.vllm_client.VLLMClient (what `trl vllm-serve` answers): the trainer pushes weights
    with update_named_param and asks for completions + per-token log-probs. The "engine" is a bf16 copy of the
    policy, so its log-probs really differ from the fp32 training pass."""

    def __init__(self, model_dir: Path, tokenizer, nan_logprob_as_none: bool = False) -> None:
        # Like vLLM, the engine names every expert projection separately (the published checkpoint layout).
        self.engine = AutoModelForCausalLM.from_pretrained(
            model_dir, trust_remote_code=True, dtype=torch.bfloat16, expert_layout="per_expert"
        ).eval()
        self.tokenizer = tokenizer
        self.updated: set[str] = set()
        self.resets = 0
        self.requests: list[dict] = []
        self.returned_logprobs: list[list[float]] = []
        # `trl vllm-serve` answers a NaN log-prob as JSON null, which the client hands over as None.
        self.nan_logprob_as_none = nan_logprob_as_none

    def update_named_param(self, name: str, weights: torch.Tensor) -> None:
        self.engine.get_parameter(name).data.copy_(weights.to(torch.bfloat16))
        self.updated.add(name)

    def reset_prefix_cache(self) -> None:
        self.resets += 1

    def generate(self, prompts: list[str], n: int, max_tokens: int, temperature: float, **kwargs) -> dict:
        self.requests.append({"n": n, "temperature": temperature, **kwargs})
        eos = self.tokenizer.eos_token_id
        prompt_ids, completion_ids, logprobs = [], [], []
        for prompt in prompts:
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            prompt_ids.append(ids)
            inputs = torch.tensor([ids] * n)
            with torch.no_grad():
                out = self.engine.generate(
                    input_ids=inputs,
                    attention_mask=torch.ones_like(inputs),
                    generation_config=GenerationConfig(
                        max_new_tokens=max_tokens,
                        do_sample=True,
                        temperature=temperature,
                        top_k=0,
                        top_p=1.0,
                        eos_token_id=eos,
                        pad_token_id=eos,
                    ),
                    output_scores=True,
                    return_dict_in_generate=True,
                )
            new = out.sequences[:, len(ids) :]
            step_logps = torch.stack(
                [
                    torch.log_softmax(s.float(), -1).gather(-1, new[:, i : i + 1]).squeeze(-1)
                    for i, s in enumerate(out.scores)
                ],
                dim=1,
            )
            keep = completion_mask_after_eos(new, eos).bool()
            for row in range(n):
                completion_ids.append(new[row][keep[row]].tolist())
                logprobs.append(step_logps[row][keep[row]].tolist())
        if self.nan_logprob_as_none:
            logprobs[0][min(1, len(logprobs[0]) - 1)] = None
        self.returned_logprobs.extend(logprobs)
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs}


def test_vllm_server_path_feeds_engine_logprobs_to_icepop(tiny, tiny_model_dir: Path, tmp_path: Path) -> None:
    trainer = _trainer(
        tiny, tmp_path, max_steps=2, max_completion_length=8, icepop_alpha=0.99, icepop_beta=1.01
    )
    fake = FakeVLLMServerClient(tiny_model_dir, tiny[1])
    _with_fake_server(trainer, fake)

    torch.manual_seed(0)
    batch = trainer._generate_and_score_completions(_rows(trainer))
    published = {name for name, _ in fake.engine.named_parameters()}
    assert "model.layers.1.mlp.experts.0.gate_proj.weight" in published
    assert fake.updated == published and fake.resets == 1  # every weight synced, under its published name
    assert fake.requests[0]["top_p"] == 1.0 and fake.requests[0]["top_k"] == -1 and fake.requests[0]["n"] == 4
    mask = batch["completion_mask"].bool()
    recorded = [row[keep].tolist() for row, keep in zip(batch[SAMPLING_LOGPS_KEY], mask, strict=True)]
    assert recorded == fake.returned_logprobs  # exactly what the engine returned, per token

    trainer.train()  # two real optimizer steps through the vLLM path
    assert fake.resets >= 2  # re-synced after the first update
    logged = [entry for entry in trainer.state.log_history if "icepop/masked_frac" in entry]
    assert len(logged) == 2
    assert all(entry["icepop/logp_diff_max"] > 1e-3 for entry in logged)
    assert any(entry["icepop/masked_frac"] > 0 for entry in logged)


def _with_fake_server(trainer: IcePopGRPOTrainer, fake: FakeVLLMServerClient) -> None:
    """What GRPOTrainer.__init__ sets up for vllm_mode="server" (it needs a CUDA device and a live server)."""
    trainer.use_vllm, trainer.vllm_mode, trainer.vllm_client = True, "server", fake
    trainer._last_loaded_step, trainer.guided_decoding_regex = -1, None
    trainer.vllm_importance_sampling_correction = False  # as IcePopGRPOConfig sets it with use_vllm


def test_none_logprobs_from_the_server_are_masked_and_counted(
    tiny, tiny_model_dir: Path, tmp_path: Path
) -> None:
    trainer = _trainer(tiny, tmp_path, max_completion_length=4)
    _with_fake_server(trainer, FakeVLLMServerClient(tiny_model_dir, tiny[1], nan_logprob_as_none=True))
    torch.manual_seed(0)
    batch = trainer._generate_and_score_completions(_rows(trainer))
    broken = ~torch.isfinite(batch[SAMPLING_LOGPS_KEY]) & batch["completion_mask"].bool()
    assert broken.sum().item() == 1
    loss = trainer._compute_loss(trainer.model, batch)
    assert torch.isfinite(loss)
    metrics = trainer._metrics["train"]
    assert metrics["icepop/broken_tokens"][-1] == 1
    assert metrics["icepop/masked_tokens"][-1] >= 1
    assert not math.isnan(metrics["icepop/ratio_mean"][-1])


def test_trainer_without_args_builds_a_default_icepop_config(tiny, tmp_path: Path, monkeypatch) -> None:
    """As GRPOTrainer does (TRL's own test_init_minimal), also on a machine without a GPU."""
    monkeypatch.chdir(tmp_path)
    model, tokenizer = tiny
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": "1+1?"}]}] * 8)
    trainer = IcePopGRPOTrainer(model, [_reward], train_dataset=dataset, processing_class=tokenizer)
    assert isinstance(trainer.args, IcePopGRPOConfig) and trainer.args.icepop
    assert Path(trainer.args.output_dir).name.endswith("-GRPO")
    if not torch.cuda.is_available():
        assert trainer.args.bf16 is False  # fp32 on a CPU instead of transformers' "doesn't support bf16/gpu"


def test_weight_sync_splits_fused_experts_into_the_published_layout(tiny_model_dir: Path) -> None:
    """After a sync, a per-expert engine computes exactly what the fused training model computes."""
    from ring_trl.grpo.vllm_sync import published_names_for_vllm

    fused = AutoModelForCausalLM.from_pretrained(tiny_model_dir, trust_remote_code=True, dtype=torch.float32)
    engine = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, trust_remote_code=True, dtype=torch.float32, expert_layout="per_expert"
    )
    torch.manual_seed(0)
    with torch.no_grad():  # training moved the experts away from the checkpoint both started from
        for name, param in fused.named_parameters():
            if "experts" in name:
                param.add_(torch.randn_like(param) * 0.5)

    class Client:
        def update_named_param(self, name: str, weights: torch.Tensor) -> None:
            engine.get_parameter(name).data.copy_(weights)

    client = Client()
    with published_names_for_vllm(vllm_client=client):
        for name, param in fused.named_parameters():
            client.update_named_param(name, param.data)
    assert "update_named_param" not in vars(client)  # the wrapper is gone after the block

    ids = torch.tensor([[5, 9, 14, 20, 33, 41, 7, 3]])
    torch.testing.assert_close(engine(ids).logits, fused(ids).logits, rtol=1e-5, atol=1e-5)
