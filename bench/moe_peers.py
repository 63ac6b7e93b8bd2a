"""Our Ring MoE against its peers at one shape: training steps (full, LoRA on attention) and cached generation.

Candidates (each measured in a fresh process; rounds interleaved in a shuffled order, so a noisy neighbour on a
shared machine hits every candidate alike):
- `ours-auto` (the default `expert_implementation: auto`) and `ours-<kernel>` for each of our kernels;
- `glm4_moe` and `qwen3_moe`: transformers' own MoE models of the same shape (GLM-4-MoE is the closest to Ring:
  sigmoid group-limited router, shared expert, partial rotary, qk-norm), each with its default experts kernel;
- `published`: the published Ring remote code, when `--published-dir` names a folder holding its
  configuration/modeling files (never part of this repository; see bench/compare_published.py).

Every candidate gets the same shape, dtype, thread count, batch and token ids. Reported per task: the median
tokens/s over rounds, and the median of the per-round ratios `ours-auto / candidate` (ratios taken within a
round cancel most of the machine's drift).

    python bench/moe_peers.py                                   # the issue-13 shape, 8 rounds, 1 thread
    python bench/moe_peers.py --published-dir DIR --rounds 8 --json outputs/bench/moe_peers.json
    python bench/moe_peers.py --shape tiny --rounds 1 --steps 1  # a smoke run (import time dominates)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
TASKS = ("train_full", "train_lora", "generate")
OUR_KERNELS = ("grouped_mm", "sorted")
NATIVE = ("glm4_moe", "qwen3_moe")
# CPU time of the worker process by default: with one thread it equals wall time on an idle machine, and it does
# not count the time other processes on a shared machine take from us. `--clock wall` for wall time.
CLOCK = time.process_time


@dataclass(frozen=True)
class Shape:
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    dense_intermediate: int
    experts: int
    top_k: int
    n_group: int
    topk_group: int
    expert_intermediate: int
    batch: int
    seq: int
    prompt: int
    new_tokens: int


SHAPES = {
    # The shape of issue 13: hidden 512, 4 layers (the first dense), 64 experts top-8, seq 512, batch 2.
    "issue": Shape(
        vocab=8192,
        hidden=512,
        layers=4,
        heads=8,
        kv_heads=2,
        head_dim=64,
        dense_intermediate=1408,
        experts=64,
        top_k=8,
        n_group=8,
        topk_group=4,
        expert_intermediate=256,
        batch=2,
        seq=512,
        prompt=64,
        new_tokens=32,
    ),
    "tiny": Shape(
        vocab=256,
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=2,
        head_dim=16,
        dense_intermediate=96,
        experts=16,
        top_k=4,
        n_group=4,
        topk_group=2,
        expert_intermediate=32,
        batch=2,
        seq=32,
        prompt=8,
        new_tokens=4,
    ),
}


# ----------------------------------------------------------------------------------------------------------------
# Models (built inside the worker process)
# ----------------------------------------------------------------------------------------------------------------


def build_ours(shape: Shape, kernel: str) -> Any:
    from ring_trl.models.bailing_moe_v2 import BailingMoeV2Config, BailingMoeV2ForCausalLM

    return BailingMoeV2ForCausalLM(BailingMoeV2Config(**_ring_fields(shape), expert_implementation=kernel))


def _shared_fields(shape: Shape) -> dict[str, Any]:
    """The fields every candidate's config names alike: one place, so the models cannot drift apart in shape."""
    return {
        "vocab_size": shape.vocab,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.dense_intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "num_experts_per_tok": shape.top_k,
        "moe_intermediate_size": shape.expert_intermediate,
        "max_position_embeddings": 4096,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "attn_implementation": "sdpa",
    }


def _ring_fields(shape: Shape) -> dict[str, Any]:
    return {
        **_shared_fields(shape),
        "num_experts": shape.experts,
        "n_group": shape.n_group,
        "topk_group": shape.topk_group,
        "num_shared_experts": 1,
        "first_k_dense_replace": 1,
        "routed_scaling_factor": 2.5,
        "partial_rotary_factor": 0.5,
        "use_qk_norm": True,
        "num_nextn_predict_layers": 0,
    }


def build_glm4_moe(shape: Shape) -> Any:
    from transformers import Glm4MoeConfig, Glm4MoeForCausalLM

    config = Glm4MoeConfig(
        **_shared_fields(shape),
        n_routed_experts=shape.experts,
        n_group=shape.n_group,
        topk_group=shape.topk_group,
        n_shared_experts=1,
        first_k_dense_replace=1,
        routed_scaling_factor=2.5,
        partial_rotary_factor=0.5,
        use_qk_norm=True,
    )
    return Glm4MoeForCausalLM(config)


def build_qwen3_moe(shape: Shape) -> Any:
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(
        **_shared_fields(shape),
        num_experts=shape.experts,
        norm_topk_prob=True,
        mlp_only_layers=[0],
    )
    return Qwen3MoeForCausalLM(config)


def build_published(shape: Shape, published_dir: Path) -> Any:
    sys.path.insert(0, str(BENCH_DIR))
    from compare_published import import_published, install_shims, published_layer_count_includes_mtp

    install_shims()
    module = import_published(published_dir)
    fields = {k: v for k, v in _ring_fields(shape).items() if k != "attn_implementation"}
    if published_layer_count_includes_mtp(module):
        fields["num_hidden_layers"] += fields["num_nextn_predict_layers"]
    config = module.BailingMoeV2Config(**fields)
    config._attn_implementation = "sdpa"
    return module.BailingMoeV2ForCausalLM(config)


def build(candidate: str, shape: Shape, published_dir: Path | None) -> Any:
    import torch

    torch.manual_seed(0)
    if candidate.startswith("ours-"):
        model = build_ours(shape, candidate.removeprefix("ours-"))
    elif candidate == "glm4_moe":
        model = build_glm4_moe(shape)
    elif candidate == "qwen3_moe":
        model = build_qwen3_moe(shape)
    elif candidate == "published":
        if published_dir is None:
            raise SystemExit("the published candidate needs --published-dir")
        model = build_published(shape, published_dir)
    else:
        raise SystemExit(f"unknown candidate {candidate!r}")
    return model.float()


LORA_TARGETS = {
    "glm4_moe": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3_moe": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


def with_lora(model: Any, candidate: str) -> Any:
    from peft import LoraConfig, get_peft_model

    targets = LORA_TARGETS.get(candidate, ["query_key_value", "dense"])
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets, lora_dropout=0.0))


# ----------------------------------------------------------------------------------------------------------------
# Timed work (worker side)
# ----------------------------------------------------------------------------------------------------------------


def time_training(model: Any, shape: Shape, steps: int, warmup: int) -> float:
    """Median tokens/s of forward + backward + AdamW step (fused, the HF Trainer default) on a fixed batch."""
    import torch

    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, shape.vocab, (shape.batch, shape.seq), generator=generator)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
    model.train()
    seconds = []
    for step in range(warmup + steps):
        start = CLOCK()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            seconds.append(CLOCK() - start)
    return shape.batch * shape.seq / statistics.median(seconds)


def time_generation(model: Any, shape: Shape, steps: int, warmup: int) -> float:
    """Median new tokens/s of greedy `generate` with a KV cache (every row runs to `new_tokens`)."""
    import torch

    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(3, shape.vocab, (shape.batch, shape.prompt), generator=generator)
    model.eval()
    seconds = []
    with torch.no_grad():
        for step in range(warmup + steps):
            start = CLOCK()
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=shape.new_tokens,
                min_new_tokens=shape.new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=0,
                eos_token_id=None,
            )
            if step >= warmup:
                seconds.append(CLOCK() - start)
            assert out.shape[1] == shape.prompt + shape.new_tokens
    return shape.batch * shape.new_tokens / statistics.median(seconds)


def run_worker(args: argparse.Namespace) -> int:
    import torch

    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    shape = SHAPES[args.shape]
    results: dict[str, float] = {}
    for task in args.tasks:
        model = build(args.worker, shape, args.published_dir)
        if task == "train_lora":
            model = with_lora(model, args.worker)
        if task == "generate":
            results[task] = time_generation(model, shape, args.steps, args.warmup)
        else:
            results[task] = time_training(model, shape, args.steps, args.warmup)
        del model
    print("RESULT " + json.dumps(results))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Harness
# ----------------------------------------------------------------------------------------------------------------


def run_one(candidate: str, args: argparse.Namespace) -> dict[str, float]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        candidate,
        "--shape",
        args.shape,
        "--threads",
        str(args.threads),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--clock",
        args.clock,
        "--tasks",
        *args.tasks,
    ]
    if args.published_dir is not None:
        command += ["--published-dir", str(args.published_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    raise RuntimeError(f"{candidate} failed (exit {done.returncode}): {' | '.join(tail)}")


def summarise(
    rounds: list[dict[str, dict[str, float]]], candidates: list[str], tasks: list[str], reference: str
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for task in tasks:
        per_candidate: dict[str, Any] = {}
        for candidate in candidates:
            values = [r[candidate][task] for r in rounds if candidate in r and task in r[candidate]]
            ratios = [
                r[reference][task] / r[candidate][task]
                for r in rounds
                if candidate in r and reference in r and task in r[candidate] and task in r[reference]
            ]
            per_candidate[candidate] = {
                "median_tokens_per_s": round(statistics.median(values), 1) if values else None,
                "tokens_per_s_per_round": [round(v, 1) for v in values],
                f"{reference}_over_this_median": round(statistics.median(ratios), 3) if ratios else None,
                f"{reference}_over_this_per_round": [round(v, 3) for v in ratios],
            }
        summary[task] = per_candidate
    return summary


def print_table(summary: dict[str, Any], reference: str) -> None:
    for task, per_candidate in summary.items():
        print(f"\n{task}")
        print(f"  {'candidate':<18} {'tokens/s (median)':>18} {reference + ' / this':>16}  per-round ratios")
        ranked = sorted(per_candidate.items(), key=lambda kv: -(kv[1]["median_tokens_per_s"] or 0))
        for candidate, row in ranked:
            ratio = row[f"{reference}_over_this_median"]
            rounds = " ".join(f"{r:.2f}" for r in row[f"{reference}_over_this_per_round"])
            ratio_text = f"{ratio:.2f}x" if ratio is not None else "-"
            median = row["median_tokens_per_s"]
            median_text = f"{median:,.1f}" if median is not None else "failed"
            print(f"  {candidate:<18} {median_text:>18} {ratio_text:>16}  {rounds}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="issue")
    parser.add_argument("--candidates", nargs="*", default=None, help="default: all available")
    parser.add_argument("--tasks", nargs="*", choices=TASKS, default=list(TASKS))
    parser.add_argument("--published-dir", type=Path, default=None, help="folder with the published code")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process (median taken)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--clock", choices=["cpu", "wall"], default="cpu", help="process CPU time or wall time"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled round order")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return run_worker(args)

    candidates = args.candidates or [
        "ours-auto",
        *(f"ours-{kernel}" for kernel in OUR_KERNELS),
        *NATIVE,
        *(["published"] if args.published_dir is not None else []),
    ]
    reference = "ours-auto"
    if reference not in candidates:
        candidates.insert(0, reference)
    shape = SHAPES[args.shape]
    print(f"shape {args.shape}: {shape}")
    print(
        f"fp32, {args.threads} thread(s), {args.clock} clock, {args.rounds} rounds x {args.steps} timed steps "
        f"(+{args.warmup} warm-up)"
    )
    rng = random.Random(args.seed)
    rounds: list[dict[str, dict[str, float]]] = []
    failures: dict[str, str] = {}
    for index in range(args.rounds):
        order = list(candidates)
        rng.shuffle(order)
        results: dict[str, dict[str, float]] = {}
        for candidate in order:
            if candidate in failures:
                continue
            try:
                results[candidate] = run_one(candidate, args)
            except RuntimeError as error:
                failures[candidate] = str(error)
                print(f"  {error}", file=sys.stderr)
        rounds.append(results)
        line = ", ".join(
            f"{c} " + "/".join(f"{results[c][t]:.0f}" for t in args.tasks) for c in order if c in results
        )
        print(f"round {index + 1}/{args.rounds} ({'/'.join(args.tasks)} tokens/s): {line}", flush=True)

    summary = summarise(rounds, candidates, args.tasks, reference)
    print_table(summary, reference)
    report = {
        "shape": {"name": args.shape, **asdict(shape)},
        "threads": args.threads,
        "clock": args.clock,
        "rounds": args.rounds,
        "steps": args.steps,
        "reference": reference,
        "tasks": summary,
        "failures": failures,
    }
    print("\nJSON " + json.dumps(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
