"""IcePop: mask tokens whose training/inference probability ratio leaves a trusted band.

Ring-1T ("Every Step Evolves", arXiv 2510.18855) computes, per completion token, the ratio
k = pi_train(y_t) / pi_infer(y_t) at the rollout policy theta_old and keeps the token in the policy-gradient
term only when alpha <= k <= beta; the kept tokens are weighted by k. These are plain tensor functions so the
maths can be tested without a trainer.
"""

from __future__ import annotations

import math

import torch


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    count = int(mask.sum().item())
    if count == 0:
        return math.nan
    return float(values[mask].double().mean().item())


def _masked_extreme(values: torch.Tensor, mask: torch.Tensor, largest: bool) -> float:
    if not bool(mask.any()):
        return math.nan
    selected = values[mask]
    return float((selected.max() if largest else selected.min()).item())


@torch.no_grad()
def icepop_weights(
    train_logps: torch.Tensor,
    infer_logps: torch.Tensor,
    completion_mask: torch.Tensor,
    alpha: float = 0.5,
    beta: float = 5.0,
    entropies: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Return (weights, metrics) for one rollout batch.

    `train_logps` / `infer_logps` are [batch, tokens] log-probs of the sampled tokens under the training engine
    (at theta_old) and under the engine that sampled them. `weights` is k where alpha <= k <= beta (bounds
    inclusive) and 0 elsewhere, including where `completion_mask` is 0. It carries no gradient.

    `metrics` are floats over the unmasked completion tokens: masked fractions (total, below alpha, above beta),
    the ratio's min/mean/max before masking, the train/inference KL (k3 estimator, samples drawn from the
    inference engine), mean and max |logp_train - logp_infer|, and, when `entropies` is given, the mean entropy
    of the masked tokens. Values that have no tokens to average over are NaN. A non-finite sampler log-prob
    (a broken token: NaN, or None from a server) is masked, counted in `broken_tokens` and as above beta;
    non-finite ratios are left out of the ratio statistics.
    """
    if train_logps.shape != infer_logps.shape or train_logps.shape != completion_mask.shape:
        raise ValueError(
            f"icepop_weights: shapes differ: train_logps {tuple(train_logps.shape)}, "
            f"infer_logps {tuple(infer_logps.shape)}, completion_mask {tuple(completion_mask.shape)}"
        )
    if not 0.0 <= alpha <= beta:
        raise ValueError(f"icepop_weights: need 0 <= alpha <= beta, got alpha={alpha}, beta={beta}")

    valid = completion_mask.bool()
    log_ratio = train_logps.float() - infer_logps.float()
    ratio = torch.exp(log_ratio)
    kept = valid & (ratio >= alpha) & (ratio <= beta)
    below = valid & (ratio < alpha)
    above = valid & ~kept & ~below  # also NaN ratios (a broken log-prob from the sampler)
    weights = torch.where(kept, ratio, torch.zeros_like(ratio)).to(train_logps.dtype)

    token_count = int(valid.sum().item())
    masked = below | above
    if token_count:
        masked_frac = float(masked.sum().item()) / token_count
        masked_frac_low = float(below.sum().item()) / token_count
        masked_frac_high = float(above.sum().item()) / token_count
    else:
        masked_frac = masked_frac_low = masked_frac_high = math.nan
    # k3 estimator of KL(pi_infer || pi_train) from samples of pi_infer: (k - 1) - log k, always >= 0.
    k3 = torch.expm1(log_ratio) - log_ratio
    abs_diff = log_ratio.abs()
    measurable = valid & torch.isfinite(log_ratio)
    metrics = {
        "masked_frac": masked_frac,
        "masked_frac_low": masked_frac_low,
        "masked_frac_high": masked_frac_high,
        "ratio_min": _masked_extreme(ratio, measurable, largest=False),
        "ratio_mean": _masked_mean(ratio, measurable),
        "ratio_max": _masked_extreme(ratio, measurable, largest=True),
        "mismatch_kl": _masked_mean(k3, measurable),
        "logp_diff_mean": _masked_mean(abs_diff, measurable),
        "logp_diff_max": _masked_extreme(abs_diff, measurable, largest=True),
        "masked_tokens": float(masked.sum().item()),
        "broken_tokens": float((valid & ~torch.isfinite(infer_logps)).sum().item()),
        "tokens": float(token_count),
    }
    if entropies is not None:
        metrics["masked_entropy"] = _masked_mean(entropies.float(), masked)
        metrics["kept_entropy"] = _masked_mean(entropies.float(), kept)
    return weights, metrics
