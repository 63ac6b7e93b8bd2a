"""Step time of IcePopGRPOTrainer (IcePop on) vs TRL's GRPOTrainer on the same settings, tiny Ring, CPU.

    python bench/icepop_overhead.py [--model models/ring-tiny] [--steps 20] [--batch 16] [--completion-length 48]

A "step" is `Trainer.training_step`: generate a rollout batch, score it, forward + loss + backward (the optimizer
update is the same for both trainers and is left out). Both trainers are built once and their steps alternate
A, B, A, B with the same seed before each pair, so they sample the same number of tokens and bursts of
background load hit both alike. Both sample from the full softmax (top_k=0).

IcePop adds: recording the sampled-token log-prob at each generation step (a log_softmax over the vocabulary and
a gather), and a few element-wise ops plus metric reductions per batch in the loss. Besides the end-to-end
difference, the bench times the IcePop-only code in place (recorder calls, weights + metrics) as a share of the
IcePop step; that number is robust to load from other processes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ring_trl.compat import ensure_warnings_issued  # noqa: E402
from ring_trl.grpo.config import IcePopGRPOConfig  # noqa: E402
from ring_trl.grpo.rollout import SampledTokenLogprobRecorder  # noqa: E402
from ring_trl.grpo.trainer import IcePopGRPOTrainer  # noqa: E402


class IcePopClock:
    """Wraps the IcePop-only functions with a timer (wall time spent inside them)."""

    spent = 0.0

    @classmethod
    def wrap(cls, owner: object, name: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                cls.spent += time.perf_counter() - start

        setattr(owner, name, timed)


IcePopClock.wrap(SampledTokenLogprobRecorder, "__call__")
IcePopClock.wrap(SampledTokenLogprobRecorder, "collect")
IcePopClock.wrap(IcePopGRPOTrainer, "_icepop_weights")


def _reward(prompts, completions, completion_ids, **_):
    return [float(len(ids) % 5) + 0.1 * i for i, ids in enumerate(completion_ids)]


def build(model_dir: Path, icepop: bool, settings: dict, output_dir: str):
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True, dtype=torch.float32)
    ensure_warnings_issued(model)
    model.train()
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}]} for i in range(64)]
    )
    common = {"reward_funcs": [_reward], "train_dataset": dataset, "processing_class": tokenizer}
    if icepop:
        trainer = IcePopGRPOTrainer(
            model=model, args=IcePopGRPOConfig(**settings, output_dir=output_dir), **common
        )
    else:
        trainer = GRPOTrainer(model=model, args=GRPOConfig(**settings, output_dir=output_dir), **common)
    trainer.current_gradient_accumulation_steps = 1
    return trainer, [dataset[i % len(dataset)] for i in range(settings["per_device_train_batch_size"])]


def timed_step(trainer, rows: list[dict], seed: int) -> tuple[float, float, float]:
    """(wall s, process CPU s, IcePop-code s) of one training_step."""
    torch.manual_seed(seed)
    IcePopClock.spent = 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.training_step(trainer.model, rows)
    trainer.model.zero_grad(set_to_none=True)
    return time.perf_counter() - wall, time.process_time() - cpu, IcePopClock.spent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "models" / "ring-tiny")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per trainer")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--completion-length", type=int, default=48)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        sys.exit(f"no model at {args.model}: run `make tiny-model` first")
    settings = {
        "per_device_train_batch_size": args.batch,
        "num_generations": 4,
        "max_prompt_length": 64,
        "max_completion_length": args.completion_length,
        "top_k": 0,  # unset, transformers 5 would add its default top-k of 50 to TRL's generate path only
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "save_strategy": "no",
        "seed": 0,
    }
    samples: dict[str, list[tuple[float, float, float]]] = {"trl": [], "icepop": []}
    with tempfile.TemporaryDirectory() as out_a, tempfile.TemporaryDirectory() as out_b:
        trainers = {
            "trl": build(args.model, False, settings, out_a),
            "icepop": build(args.model, True, settings, out_b),
        }
        for step in range(args.warmup + args.steps):
            order = ("trl", "icepop") if step % 2 == 0 else ("icepop", "trl")
            for name in order:
                trainer, rows = trainers[name]
                sample = timed_step(trainer, rows, seed=step)
                if step >= args.warmup:
                    samples[name].append(sample)

    def median(name: str, index: int) -> float:
        return statistics.median(s[index] for s in samples[name])

    wall = {name: median(name, 0) for name in samples}
    cpu = {name: median(name, 1) for name in samples}
    share = [s[2] / s[0] for s in samples["icepop"]]
    paired = [b[0] / a[0] - 1.0 for a, b in zip(samples["trl"], samples["icepop"], strict=True)]
    result = {
        "settings": {
            k: settings[k]
            for k in ("per_device_train_batch_size", "max_completion_length", "num_generations")
        },
        "steps_per_trainer": args.steps,
        "median_step_wall_s": wall,
        "median_step_cpu_s": cpu,
        "end_to_end_overhead_wall_percent": (wall["icepop"] / wall["trl"] - 1.0) * 100.0,
        "end_to_end_overhead_cpu_percent": (cpu["icepop"] / cpu["trl"] - 1.0) * 100.0,
        "paired_step_overhead_wall_percent_median": statistics.median(paired) * 100.0,
        "icepop_code_share_of_step_percent_median": statistics.median(share) * 100.0,
        "icepop_code_share_of_step_percent_max": max(share) * 100.0,
        "icepop_code_time_per_step_ms_median": median("icepop", 2) * 1000.0,
        "torch_threads": torch.get_num_threads(),
    }
    print(f"steps timed per trainer: {args.steps} (batch {args.batch}, {args.completion_length} new tokens)")
    print(
        f"TRL GRPOTrainer    median step  wall {wall['trl'] * 1000:8.1f} ms   cpu {cpu['trl'] * 1000:8.1f} ms"
    )
    print(
        f"IcePopGRPOTrainer  median step  wall {wall['icepop'] * 1000:8.1f} ms   cpu {cpu['icepop'] * 1000:8.1f} ms"
    )
    print(
        f"end-to-end: wall {result['end_to_end_overhead_wall_percent']:+.2f} %, cpu "
        f"{result['end_to_end_overhead_cpu_percent']:+.2f} %, paired-step median "
        f"{result['paired_step_overhead_wall_percent_median']:+.2f} %"
    )
    print(
        f"time inside IcePop code: {result['icepop_code_time_per_step_ms_median']:.1f} ms/step = "
        f"{result['icepop_code_share_of_step_percent_median']:.2f} % of the step (median; max "
        f"{result['icepop_code_share_of_step_percent_max']:.2f} %), target <= 3 %"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
