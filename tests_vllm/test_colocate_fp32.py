"""An fp32 vLLM engine colocated with an fp32 trainer must agree with it token for token: any difference is a
sync or layout bug, not numerics. One engine serves every test in this module (in order)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ring_trl.grpo.trainer import SAMPLING_LOGPS_KEY

FP32_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def trainer(make_colocate_trainer, shut_down, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    built = make_colocate_trainer(
        tiny_model_dir,
        tmp_path_factory.mktemp("fp32"),
        engine_dtype="float32",
        temperature=0.8,  # colocate mode returns post-temperature log-probs: the trainer must match those
        learning_rate=2e-2,  # large steps on purpose: the weights really move between syncs
        max_steps=3,
        icepop_alpha=0.5,
        icepop_beta=5.0,
    )
    built.args.vllm_sync_check = FP32_TOLERANCE  # the self-check runs after every sync and raises on mismatch
    yield built
    shut_down(built)


def test_engine_logprobs_of_sampled_tokens_match_the_trainer(trainer) -> None:
    rows = [trainer.train_dataset[i] for i in range(8)]
    batch = trainer._generate_and_score_completions(rows)
    mask = batch["completion_mask"].bool()
    assert int(mask.sum()) >= 32  # real completions came back from the engine
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    with torch.no_grad():
        trained, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, input_ids, attention, batch["completion_ids"].size(1)
        )
    engine = batch[SAMPLING_LOGPS_KEY]
    difference = (trained - engine).abs()[mask]
    print(
        f"fp32 engine vs trainer, sampled tokens: max |dlogp| {difference.max():.3g} over {mask.sum()} tokens"
    )
    assert float(difference.max()) <= FP32_TOLERANCE
    assert float(engine[mask].max()) < -1e-3  # genuine log-probs, not zeros or padding


def test_icepop_ratio_stays_one_after_every_weight_sync(trainer) -> None:
    expert = trainer.model.model.layers[1].mlp.experts.gate_up_proj
    before = expert.detach().clone()
    syncs = []
    original = trainer._move_model_to_vllm

    def counted_sync() -> None:
        original()
        syncs.append(trainer.state.global_step)

    trainer._move_model_to_vllm = counted_sync
    try:
        trainer.train()
    finally:
        del trainer._move_model_to_vllm
    assert syncs == [
        1,
        2,
    ]  # one bulk sync before each later step's rollouts (step 0 synced in the test above)
    assert float((expert.detach() - before).abs().max()) > 1e-3  # the experts really were trained
    steps = [entry for entry in trainer.state.log_history if "icepop/ratio_min" in entry]
    assert len(steps) == 3
    for entry in steps:
        print(
            f"step ratio [{entry['icepop/ratio_min']:.7f}, {entry['icepop/ratio_max']:.7f}] "
            f"max |dlogp| {entry['icepop/logp_diff_max']:.3g} masked {entry['icepop/masked_frac']}"
        )
        assert abs(entry["icepop/ratio_min"] - 1.0) <= FP32_TOLERANCE
        assert abs(entry["icepop/ratio_max"] - 1.0) <= FP32_TOLERANCE
        assert entry["icepop/logp_diff_max"] <= FP32_TOLERANCE
        assert entry["icepop/masked_frac"] == 0.0


def test_self_check_catches_a_sync_that_skips_the_cpu_expert_repack(trainer, monkeypatch) -> None:
    """Negative control for the test above: without re-running the CPU build's MoE prepacking, the engine
    serves wrong experts after a reload, and the self-check must say so (not a silent few-percent drift)."""
    from ring_trl.grpo import vllm_sync

    monkeypatch.setattr(vllm_sync, "repack_cpu_experts", lambda model: 0)
    with pytest.raises(vllm_sync.EngineMismatchError, match="self-check failed"):
        trainer._move_model_to_vllm()
    monkeypatch.undo()
    trainer._move_model_to_vllm()  # the real sync restores agreement (raises otherwise)
