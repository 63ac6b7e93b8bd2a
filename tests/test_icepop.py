"""icepop_weights against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from ring_trl.icepop import icepop_weights


def _logps(ratios: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """train/infer log-probs whose ratio train/infer is exactly `ratios` (infer fixed at log 0.25)."""
    infer = torch.full((len(ratios), len(ratios[0])), math.log(0.25), dtype=torch.float64)
    train = infer + torch.log(torch.tensor(ratios, dtype=torch.float64))
    return train, infer


def test_band_is_inclusive_and_weights_are_the_ratio() -> None:
    train, infer = _logps([[0.5, 5.0, 0.49, 5.01, 1.0, 2.0]])
    mask = torch.ones_like(train, dtype=torch.long)
    weights, metrics = icepop_weights(train, infer, mask, alpha=0.5, beta=5.0)
    torch.testing.assert_close(weights, torch.tensor([[0.5, 5.0, 0.0, 0.0, 1.0, 2.0]], dtype=torch.float64))
    assert metrics["masked_frac"] == pytest.approx(2 / 6)
    assert metrics["masked_frac_low"] == pytest.approx(1 / 6)
    assert metrics["masked_frac_high"] == pytest.approx(1 / 6)
    assert metrics["ratio_min"] == pytest.approx(0.49)
    assert metrics["ratio_max"] == pytest.approx(5.01)
    assert metrics["ratio_mean"] == pytest.approx((0.5 + 5.0 + 0.49 + 5.01 + 1.0 + 2.0) / 6)
    diffs = [abs(math.log(r)) for r in (0.5, 5.0, 0.49, 5.01, 1.0, 2.0)]
    assert metrics["logp_diff_mean"] == pytest.approx(sum(diffs) / 6)
    assert metrics["logp_diff_max"] == pytest.approx(max(diffs))
    k3 = [(r - 1) - math.log(r) for r in (0.5, 5.0, 0.49, 5.01, 1.0, 2.0)]
    assert metrics["mismatch_kl"] == pytest.approx(sum(k3) / 6)
    assert weights.requires_grad is False


def test_padding_is_ignored_in_weights_and_metrics() -> None:
    # Row 0 has 2 real tokens then padding with wild ratios; row 1 has 3 real tokens.
    train, infer = _logps([[1.0, 0.1, 100.0], [0.25, 1.5, 3.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    weights, metrics = icepop_weights(train, infer, mask)
    torch.testing.assert_close(weights, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.5, 3.0]], dtype=torch.float64))
    assert metrics["tokens"] == 5
    assert metrics["masked_tokens"] == 2
    assert metrics["masked_frac"] == pytest.approx(2 / 5)
    assert metrics["masked_frac_low"] == pytest.approx(2 / 5)
    assert metrics["masked_frac_high"] == 0.0
    assert metrics["ratio_max"] == pytest.approx(3.0)  # the 100.0 sits on padding
    assert metrics["ratio_min"] == pytest.approx(0.1)


def test_all_masked_row_gives_zero_weights_and_nan_free_other_rows() -> None:
    train, infer = _logps([[9.0, 9.0], [1.2, 0.8]])
    mask = torch.tensor([[0, 0], [1, 1]])
    weights, metrics = icepop_weights(train, infer, mask)
    assert torch.equal(weights[0], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(weights[1], torch.tensor([1.2, 0.8], dtype=torch.float64))
    assert metrics["masked_frac"] == 0.0


def test_everything_masked_out_reports_nan_not_fake_numbers() -> None:
    train, infer = _logps([[2.0, 3.0]])
    weights, metrics = icepop_weights(train, infer, torch.zeros(1, 2, dtype=torch.long))
    assert torch.equal(weights, torch.zeros(1, 2, dtype=torch.float64))
    assert math.isnan(metrics["masked_frac"]) and math.isnan(metrics["ratio_mean"])
    assert metrics["tokens"] == 0


def test_non_finite_inference_logps_are_masked() -> None:
    train = torch.tensor([[-1.0, -1.0, -1.0]])
    infer = torch.tensor([[-float("inf"), float("nan"), -1.0]])
    weights, metrics = icepop_weights(train, infer, torch.ones(1, 3))
    assert weights.tolist() == [[0.0, 0.0, 1.0]]
    assert metrics["masked_frac_high"] == pytest.approx(2 / 3)
    assert metrics["broken_tokens"] == 2
    assert metrics["mismatch_kl"] == 0.0 and metrics["ratio_max"] == 1.0  # statistics over finite ratios only


def test_entropy_of_masked_tokens() -> None:
    train, infer = _logps([[0.1, 1.0, 7.0, 1.0]])
    entropies = torch.tensor([[3.0, 0.5, 5.0, 1.5]])
    _, metrics = icepop_weights(train, infer, torch.ones(1, 4), entropies=entropies)
    assert metrics["masked_entropy"] == pytest.approx(4.0)
    assert metrics["kept_entropy"] == pytest.approx(1.0)


def test_custom_band_and_bad_inputs() -> None:
    train, infer = _logps([[0.9, 1.1, 1.2]])
    weights, _ = icepop_weights(train, infer, torch.ones(1, 3), alpha=0.9, beta=1.1)
    torch.testing.assert_close(weights, torch.tensor([[0.9, 1.1, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="shapes differ"):
        icepop_weights(train, infer[:, :2], torch.ones(1, 3))
    with pytest.raises(ValueError, match="alpha"):
        icepop_weights(train, infer, torch.ones(1, 3), alpha=2.0, beta=1.0)
