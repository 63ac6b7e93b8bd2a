"""Evaluation metrics: avg@n, unbiased pass@k, maj@n, truncated fraction, response lengths.

pass@k is the unbiased estimator of Chen et al. (2021): with n samples of which c are correct,
pass@k = 1 - C(n-c, k) / C(n, k), averaged over problems. avg@n is the mean accuracy over all samples (the
same number as pass@1, named for what it is). maj@n takes the most frequent extracted answer among the
problem's n samples (ties: the one seen first; truncated samples and samples without an answer do not vote)
and scores it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 < k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i): the ratio of binomials without huge integers
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@dataclass
class SampleScore:
    correct: bool
    vote: str | None  # the answer's canonical form; None = no answer to vote with
    truncated: bool
    undecidable: bool
    length: int | None


def majority_correct(samples: Sequence[SampleScore]) -> bool:
    """Is the most frequent answer (ties: first seen) correct? False when no sample has an answer."""
    votes = [s.vote for s in samples if s.vote is not None and not s.truncated]
    if not votes:
        return False
    counts = Counter(votes)
    best = max(counts.values())
    winner = next(v for v in votes if counts[v] == best)
    return next(s.correct for s in samples if s.vote == winner and not s.truncated)


def _round(value: float) -> float:
    return round(float(value), 4)


def summarize(
    per_problem: Sequence[Sequence[SampleScore]], ks: Sequence[int], length_unit: str = "tokens"
) -> dict:
    """The `metrics` object of summary.json. Every problem must have the same number of samples n."""
    if not per_problem:
        raise ValueError("no problems to summarize")
    n = len(per_problem[0])
    if any(len(samples) != n for samples in per_problem):
        raise ValueError("every problem needs the same number of samples")
    flat = [s for samples in per_problem for s in samples]
    metrics: dict[str, float | int] = {f"avg@{n}": _round(np.mean([s.correct for s in flat]))}
    for k in ks:
        values = [pass_at_k(n, sum(s.correct for s in samples), k) for samples in per_problem]
        metrics[f"pass@{k}"] = _round(np.mean(values))
    metrics[f"maj@{n}"] = _round(np.mean([majority_correct(samples) for samples in per_problem]))
    metrics["truncated_frac"] = _round(np.mean([s.truncated for s in flat]))
    metrics["undecidable"] = sum(s.undecidable for s in flat)
    lengths = [s.length for s in flat if s.length is not None]
    if lengths:
        p50, p90 = np.percentile(lengths, [50, 90])
        metrics[f"response_{length_unit}_mean"] = _round(np.mean(lengths))
        metrics[f"response_{length_unit}_p50"] = _round(p50)
        metrics[f"response_{length_unit}_p90"] = _round(p90)
    return metrics
