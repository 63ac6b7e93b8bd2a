"""Every GRPO rollout with its rewards, as JSONL: the samples `data_prep build-pref --from-samples` pairs up.

On with `save_samples: true` in a recipe. Each process appends its own rollouts (`samples.jsonl` in output_dir,
`samples.rank<N>.jsonl` for process N > 0 of a multi-process run), one line per completion:

    {"id": ..., "step": 12, "prompt": [...messages], "completion": "...</think>\\n\\n42",
     "rewards": {"math_answer": 1.0, "think_format": 1.0}, "reward": 1.2, "answer": "42", ...}

`reward` is the weighted sum the trainer optimises (rewards a function declined, None, are left out of it, as
TRL does); the prompt row's other columns follow. A run that starts from step 0 starts a new file; a resumed
run appends. Rollouts are long, so this is off by default: one line per completion and step adds up.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any

from ring_trl.grpo.rewards.text import completion_text


def samples_path(output_dir: str | Path, rank: int) -> Path:
    return Path(output_dir) / ("samples.jsonl" if rank == 0 else f"samples.rank{rank}.jsonl")


class SampleLog:
    """Appends the rollouts of one process; see the module docstring."""

    def __init__(self, path: Path, names: list[str], weights: list[float], resume: bool) -> None:
        self.path, self.names, self.weights = path, names, weights
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = open(path, "a" if resume else "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(
        self,
        step: int,
        inputs: list[dict[str, Any]],
        prompts: list,
        completions: list,
        rewards: list[list[float]],
    ) -> None:
        """`rewards`: this process's rows, one value per reward function (NaN where the function gave None)."""
        for row, prompt, completion, values in zip(inputs, prompts, completions, rewards, strict=True):
            per_name = {
                name: (None if math.isnan(v) else v) for name, v in zip(self.names, values, strict=True)
            }
            total = sum(w * v for w, v in zip(self.weights, values, strict=True) if not math.isnan(v))
            columns = {k: v for k, v in row.items() if k not in ("prompt", "completion", "completion_ids")}
            line = {
                "id": row.get("id"),
                "step": step,
                "prompt": prompt,
                "completion": completion_text(completion),
                "rewards": per_name,
                "reward": total,
                **{k: v for k, v in columns.items() if k not in ("id", "step", "rewards", "reward")},
            }
            self._handle.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
