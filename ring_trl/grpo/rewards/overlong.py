"""DAPO's soft overlong penalty: 0 up to max_length - cache_length tokens, then a linear ramp down to -1."""

from __future__ import annotations

from typing import Any


def overlong_penalty(
    prompts: list,
    completions: list,
    completion_ids: list[list[int]],
    max_length: int = 1024,
    cache_length: int = 256,
    **_: Any,
) -> list[float]:
    """Penalty in [-1, 0] from the completion length in tokens (DAPO, arXiv 2503.14476, eq. 13)."""
    if not 0 < cache_length <= max_length:
        raise ValueError(
            f"overlong_penalty needs 0 < cache_length <= max_length, got {cache_length}, {max_length}"
        )
    free = max_length - cache_length
    scores = []
    for ids in completion_ids:
        length = len(ids)
        if length <= free:
            scores.append(0.0)
        elif length <= max_length:
            scores.append((free - length) / cache_length)
        else:
            scores.append(-1.0)
    return scores
