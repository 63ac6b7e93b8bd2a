"""IcePop loss on the tiny Ring model: equals TRL's loss when nothing is masked, masks exactly, keeps KL."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from ring_trl.compat import ensure_warnings_issued
from ring_trl.grpo.config import IcePopGRPOConfig
from ring_trl.grpo.trainer import SAMPLING_LOGPS_KEY, WEIGHTS_KEY, IcePopGRPOTrainer

BATCH = 4


def _length_reward(prompts, completions, completion_ids, **_):
    return [float(len(ids) % 3) for ids in completion_ids]


def _config(tmp_path: Path, cls=IcePopGRPOConfig, **overrides):
    settings = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": BATCH,
        "num_generations": BATCH,
        "max_prompt_length": 32,
        "max_completion_length": 10,
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "save_strategy": "no",
        "seed": 0,
        "beta": 0.0,
        **overrides,
    }
    return cls(**settings)


@pytest.fixture(scope="module")
def tiny_parts(tiny_model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, trust_remote_code=True, dtype=torch.float32)
    ensure_warnings_issued(model)
    model.train()  # metrics are filed under the "train" mode, as during training
    dataset = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": f"What is {i} + 1?"}], "answer": str(i + 1)}
            for i in range(8)
        ]
    )
    return model, tokenizer, dataset


def _trainer(tiny_parts, tmp_path: Path, **overrides) -> IcePopGRPOTrainer:
    model, tokenizer, dataset = tiny_parts
    trainer = IcePopGRPOTrainer(
        model=model,
        reward_funcs=[_length_reward],
        args=_config(tmp_path, **overrides),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.current_gradient_accumulation_steps = 1
    return trainer


@pytest.fixture(scope="module")
def rollout(tiny_parts, tmp_path_factory):
    """One real rollout batch (HF generate + recorded sampling log-probs), with fixed, non-zero advantages."""
    trainer = _trainer(tiny_parts, tmp_path_factory.mktemp("rollout"))
    rows = [tiny_parts[2][0]] * BATCH
    torch.manual_seed(0)
    batch = trainer._generate_and_score_completions(rows)
    batch["advantages"] = torch.tensor([1.0, -0.5, 2.0, -1.5])
    assert batch["completion_mask"].sum() > BATCH, "rollout produced (almost) no tokens"
    with torch.no_grad():
        train_logps, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model,
            torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1),
            torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1),
            batch["completion_ids"].size(1),
        )
    return batch, train_logps


def _with_ratios(batch: dict, train_logps: torch.Tensor, log_ratio: torch.Tensor) -> dict:
    """A copy of the batch whose inference log-probs make k = exp(log_ratio) (k = 1 exactly where 0)."""
    inputs = {k: v for k, v in batch.items() if k != WEIGHTS_KEY}
    inputs[SAMPLING_LOGPS_KEY] = train_logps - log_ratio
    return inputs


def test_recorded_sampling_logps_match_training_logps_without_mismatch(rollout) -> None:
    batch, train_logps = rollout
    mask = batch["completion_mask"].bool()
    diff = (batch[SAMPLING_LOGPS_KEY] - train_logps).abs()[mask]
    assert diff.max().item() < 1e-3  # same fp32 model, only KV-cache vs full-pass rounding


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_unmasked_icepop_loss_equals_trl_loss(tiny_parts, rollout, tmp_path: Path, loss_type: str) -> None:
    from trl import GRPOConfig, GRPOTrainer

    batch, train_logps = rollout
    inputs = _with_ratios(batch, train_logps, torch.zeros_like(train_logps))  # k = 1 for every token
    model, tokenizer, dataset = tiny_parts
    reference = GRPOTrainer(
        model=model,
        reward_funcs=[_length_reward],
        args=_config(tmp_path / "trl", cls=GRPOConfig, loss_type=loss_type),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    reference.current_gradient_accumulation_steps = 1
    icepop_on = _trainer(tiny_parts, tmp_path / "on", loss_type=loss_type)
    icepop_off = _trainer(tiny_parts, tmp_path / "off", loss_type=loss_type, icepop=False)
    # A KL term too: the reference model's log-probs are given, as TRL computes them at rollout time.
    ref_logps = train_logps + 0.05 * torch.randn_like(train_logps)
    for trainer in (reference, icepop_on, icepop_off):
        trainer.beta = 0.04
    inputs["ref_per_token_logps"] = ref_logps
    expected = reference._compute_loss(model, dict(inputs))
    assert torch.isfinite(expected) and expected.abs() > 0
    torch.testing.assert_close(icepop_off._compute_loss(model, dict(inputs)), expected, rtol=0, atol=0)
    torch.testing.assert_close(icepop_on._compute_loss(model, dict(inputs)), expected, rtol=1e-6, atol=1e-7)
    # and TRL's own logged metrics are reproduced by the IcePop loss
    for key in ("entropy", "kl", "clip_ratio/region_mean"):
        assert icepop_on._metrics["train"][key][-1] == pytest.approx(
            reference._metrics["train"][key][-1], rel=1e-5
        )


def _pick_positions(mask: torch.Tensor) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Two masked-out positions (one low, one high) in rows with non-zero advantage."""
    low, high = [], []
    for row in range(mask.size(0)):
        length = int(mask[row].sum())
        if length >= 2:
            low.append((row, 0))
            high.append((row, length - 1))
    return low[:2], high[:2]


def _logps_with_grad(trainer: IcePopGRPOTrainer) -> list[torch.Tensor]:
    """Make the trainer keep the gradient of its per-token log-probs, so we can read it after backward."""
    captured: list[torch.Tensor] = []
    original = trainer._get_per_token_logps_and_entropies

    def capture(*args, **kwargs):
        logps, entropies = original(*args, **kwargs)
        logps.retain_grad()
        captured.append(logps)
        return logps, entropies

    trainer._get_per_token_logps_and_entropies = capture
    return captured


def test_tokens_outside_the_band_get_exactly_zero_gradient(tiny_parts, rollout, tmp_path: Path) -> None:
    batch, train_logps = rollout
    mask = batch["completion_mask"]
    low, high = _pick_positions(mask)
    log_ratio = torch.zeros_like(train_logps)
    for row, col in low:
        log_ratio[row, col] = math.log(0.3)  # k = 0.3 < alpha
    for row, col in high:
        log_ratio[row, col] = math.log(8.0)  # k = 8 > beta
    trainer = _trainer(tiny_parts, tmp_path)
    captured = _logps_with_grad(trainer)
    inputs = _with_ratios(batch, train_logps, log_ratio)
    trainer.model.zero_grad()
    trainer._compute_loss(trainer.model, inputs).backward()
    grad = captured[-1].grad
    masked = torch.zeros_like(mask, dtype=torch.bool)
    for row, col in low + high:
        masked[row, col] = True
    assert torch.all(grad[masked] == 0.0)
    kept = mask.bool() & ~masked
    assert torch.all(grad[kept] != 0.0)  # every kept token pushes (advantages are all non-zero)
    metrics = trainer._metrics["train"]
    assert metrics["icepop/masked_tokens"][-1] == len(low) + len(high)
    assert metrics["icepop/masked_frac_low"][-1] == pytest.approx(len(low) / mask.sum().item())
    assert "icepop/masked_entropy" in metrics


def test_all_tokens_masked_gives_zero_parameter_gradient_but_kl_still_acts(
    tiny_parts, rollout, tmp_path
) -> None:
    batch, train_logps = rollout
    inputs = _with_ratios(batch, train_logps, torch.full_like(train_logps, math.log(20.0)))
    trainer = _trainer(tiny_parts, tmp_path)
    trainer.model.zero_grad()
    trainer._compute_loss(trainer.model, dict(inputs)).backward()
    grads = [p.grad for p in trainer.model.parameters() if p.requires_grad]
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)

    # With a KL penalty the masked tokens still get its gradient: the KL term is not masked.
    trainer.beta = 0.1
    captured = _logps_with_grad(trainer)
    inputs["ref_per_token_logps"] = train_logps + 0.1
    trainer.model.zero_grad()
    trainer._compute_loss(trainer.model, dict(inputs)).backward()
    mask = batch["completion_mask"].bool()
    assert torch.all(captured[-1].grad[mask] != 0.0)


def test_masked_tokens_stay_in_the_grpo_denominator(tiny_parts, rollout, tmp_path: Path) -> None:
    batch, train_logps = rollout
    mask = batch["completion_mask"].float()
    log_ratio = torch.zeros_like(train_logps)
    log_ratio[:, 0] = math.log(10.0)  # first token of every row masked out
    log_ratio[:, 1] = math.log(2.0)  # second token kept with weight 2
    inputs = _with_ratios(batch, train_logps, log_ratio)
    trainer = _trainer(tiny_parts, tmp_path, loss_type="grpo")
    loss = trainer._compute_loss(trainer.model, inputs)
    # At theta_old the policy ratio is 1, so each kept token contributes -A * k; |y_i| counts every token.
    weights = mask.clone()
    weights[:, 0] = 0.0
    weights[:, 1] *= 2.0
    advantages = batch["advantages"].unsqueeze(1)
    expected = ((-advantages * weights * mask).sum(-1) / mask.sum(-1)).mean()
    torch.testing.assert_close(loss, expected.to(loss.dtype), rtol=1e-5, atol=1e-6)


def test_weights_are_computed_once_per_rollout_batch(tiny_parts, rollout, tmp_path: Path) -> None:
    batch, train_logps = rollout
    inputs = _with_ratios(batch, train_logps, torch.zeros_like(train_logps))
    trainer = _trainer(tiny_parts, tmp_path)
    trainer._compute_loss(trainer.model, inputs)
    first = inputs[WEIGHTS_KEY]
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.add_(0.01)  # a later iteration (num_iterations > 1) runs at new parameters...
    try:
        trainer._compute_loss(trainer.model, inputs)
    finally:
        with torch.no_grad():
            for parameter in trainer.model.parameters():
                parameter.sub_(0.01)
    assert inputs[WEIGHTS_KEY] is first  # ...but k stays the one measured at theta_old
    assert len(trainer._metrics["train"]["icepop/masked_frac"]) == 1


def test_kl_reference_model_is_built_for_remote_code_models(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, trust_remote_code=True, dtype=torch.float32)
    model.train()
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": "What is 2 + 2?"}]}] * 4)
    trainer = IcePopGRPOTrainer(
        model=model,
        reward_funcs=[_length_reward],
        args=_config(tmp_path, beta=0.04),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.current_gradient_accumulation_steps = 1
    assert trainer.beta == 0.04 and trainer.ref_model is not None
    assert trainer.args.beta == 0.04
    batch = trainer._generate_and_score_completions([dataset[0]] * BATCH)
    assert "ref_per_token_logps" in batch
    trainer._compute_loss(trainer.model, batch)
    assert trainer._metrics["train"]["kl"][-1] == pytest.approx(0.0, abs=1e-6)  # policy == reference so far
    with torch.no_grad():
        trainer.model.lm_head.weight.mul_(1.5)
    trainer._compute_loss(trainer.model, {k: v for k, v in batch.items() if k != WEIGHTS_KEY})
    assert trainer._metrics["train"]["kl"][-1] > 1e-4
