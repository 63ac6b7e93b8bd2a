"""A bf16 engine next to an fp32 trainer: the mismatch IcePop exists for, made real. On a sharpened copy of the
tiny model (peaked next-token distributions, like a trained model) the engine's bf16 log-probs leave the band
for some tokens, IcePop masks them, and the metrics say so."""

from __future__ import annotations

from pathlib import Path

import pytest

# A band the bf16 rounding of this small model reaches; the Ring recipes keep the paper's [0.5, 5].
ALPHA, BETA = 0.98, 1.02


@pytest.fixture(scope="module")
def trainer(
    make_colocate_trainer, shut_down, sharpened_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
):
    built = make_colocate_trainer(
        sharpened_model_dir,
        tmp_path_factory.mktemp("bf16"),
        engine_dtype="bfloat16",
        temperature=1.0,
        learning_rate=1e-3,
        max_steps=2,
        icepop_alpha=ALPHA,
        icepop_beta=BETA,
    )
    yield built
    shut_down(built)


def test_bf16_engine_gives_a_masked_fraction_and_logs_the_metrics(trainer) -> None:
    trainer.train()
    steps = [entry for entry in trainer.state.log_history if "icepop/masked_frac" in entry]
    assert len(steps) == 2
    for entry in steps:
        for name in (
            "icepop/masked_frac_low",
            "icepop/masked_frac_high",
            "icepop/ratio_min",
            "icepop/ratio_max",
            "icepop/mismatch_kl",
            "icepop/logp_diff_mean",
            "icepop/logp_diff_max",
            "icepop/tokens",
        ):
            assert name in entry
        print(
            f"bf16 engine: masked {entry['icepop/masked_frac']:.4f} ratio [{entry['icepop/ratio_min']:.4f}, "
            f"{entry['icepop/ratio_max']:.4f}] max |dlogp| {entry['icepop/logp_diff_max']:.3g} "
            f"kl {entry['icepop/mismatch_kl']:.3g}"
        )
        assert entry["icepop/logp_diff_max"] > 1e-3  # the engine really runs in bf16 (fp32 agrees to ~1e-6)
    assert max(entry["icepop/masked_frac"] for entry in steps) > 0.0
    assert "icepop/masked_entropy" in steps[0] or "icepop/masked_entropy" in steps[1]
