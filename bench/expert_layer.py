"""Benchmark the routed-expert layer alone (forward + backward) for each expert implementation.

Ours (`loop`, `sorted`, `per_expert_sorted`, `grouped_mm`) next to transformers' experts interface
(`transformers.integrations.moe`: `hf_grouped_mm`, `hf_batched_mm`) run on the same fused weights and routing.
Implementations are timed round-robin (one call each per round, median over rounds), so a busy machine slows
them alike. On CPU the clock is the process CPU time; on CUDA, wall time with synchronisation.

CPU default: a small shape that runs in seconds. On a CUDA GPU the default is Ring-mini-2.0's shape
(8192 tokens, hidden 2048, expert width 512, 256 experts, top-8, bf16).

    python bench/expert_layer.py                      # small shape on CPU
    python bench/expert_layer.py --shape moe-peers    # the bench/moe_peers.py shape (1024 tokens, 64 experts)
    python bench/expert_layer.py --no-grad --tokens 2 # one decoding step
    python bench/expert_layer.py --shape ring-mini    # GPU
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ring_trl.models.bailing_moe_v2 import BailingMoeV2Config
from ring_trl.models.bailing_moe_v2.modeling_bailing_moe_v2 import (
    BailingMoeV2FusedExperts,
    BailingMoeV2Gate,
    BailingMoeV2PerExpertExperts,
    grouped_mm_available,
)


@dataclass(frozen=True)
class Shape:
    tokens: int
    hidden: int
    intermediate: int
    experts: int
    top_k: int
    n_group: int
    topk_group: int


SHAPES = {
    "small": Shape(tokens=2048, hidden=256, intermediate=128, experts=32, top_k=4, n_group=4, topk_group=2),
    "moe-peers": Shape(
        tokens=1024, hidden=512, intermediate=256, experts=64, top_k=8, n_group=8, topk_group=4
    ),
    "ring-mini": Shape(
        tokens=8192, hidden=2048, intermediate=512, experts=256, top_k=8, n_group=8, topk_group=4
    ),
}
HF_KERNELS = ("hf_grouped_mm", "hf_batched_mm")


def _config(shape: Shape, layout: str, implementation: str) -> BailingMoeV2Config:
    return BailingMoeV2Config(
        hidden_size=shape.hidden,
        moe_intermediate_size=shape.intermediate,
        num_experts=shape.experts,
        num_experts_per_tok=shape.top_k,
        n_group=shape.n_group,
        topk_group=shape.topk_group,
        expert_layout=layout,
        expert_implementation=implementation,
    )


def _routing(shape: Shape, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed routing from a random router, so every implementation sees the same assignment."""
    gate = BailingMoeV2Gate(_config(shape, "fused", "auto")).to(device)
    torch.nn.init.normal_(gate.weight, std=0.02)
    hidden = torch.randn(shape.tokens, shape.hidden, device=device)
    top_idx, top_weight, _ = gate(hidden)
    return top_idx.detach(), top_weight.detach()


def _experts(shape: Shape, name: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    layout = "per_expert" if name == "per_expert_sorted" else "fused"
    implementation = {"per_expert_sorted": "sorted"}.get(name, "sorted" if name in HF_KERNELS else name)
    config = _config(shape, layout, implementation)
    module = BailingMoeV2FusedExperts(config) if layout == "fused" else BailingMoeV2PerExpertExperts(config)
    torch.manual_seed(1)
    for parameter in module.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    return module.to(device=device, dtype=dtype)


def _forward(name: str, module: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """The call that computes the experts: our module, or transformers' interface function on its weights."""
    if name not in HF_KERNELS:
        return module
    from transformers.integrations import moe

    # What `@use_experts_implementation` adds to an experts class: weights [E, out, in], gated, no bias.
    module.has_gate, module.has_bias, module.is_transposed = True, False, False
    module._apply_gate = module._activate
    kernel = moe.grouped_mm_experts_forward if name == "hf_grouped_mm" else moe.batched_mm_experts_forward
    return lambda hidden, top_idx, top_weight: kernel(module, hidden, top_idx, top_weight)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _clock(device: torch.device) -> Callable[[], float]:
    return time.perf_counter if device.type == "cuda" else time.process_time


def time_round_robin(
    calls: dict[str, Callable[[], None]], device: torch.device, warmup: int, repeats: int
) -> dict[str, float]:
    """Median milliseconds per implementation, calling each once per round."""
    clock = _clock(device)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for step in range(warmup + repeats):
        for name, call in calls.items():
            _sync(device)
            start = clock()
            call()
            _sync(device)
            if step >= warmup:
                times[name].append((clock() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def implementations(device: torch.device, dtype: torch.dtype, tokens: int) -> list[str]:
    names = ["loop", "sorted", "per_expert_sorted"]
    if grouped_mm_available(device, dtype):
        names += ["grouped_mm", "hf_grouped_mm"]
    if (
        tokens <= 256
    ):  # batched_mm gathers one weight matrix per (token, slot): for decoding-size batches only
        names.append("hf_batched_mm")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cuda = torch.cuda.is_available()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="ring-mini" if cuda else "small")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16" if cuda else "fp32")
    parser.add_argument("--tokens", type=int, default=None, help="override the shape's token count")
    parser.add_argument("--no-grad", action="store_true", help="forward only (inference)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--only", nargs="*", default=None, help="implementations to run (default: all available)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    shape = SHAPES[args.shape]
    if args.tokens:
        shape = Shape(args.tokens, *list(shape.__dict__.values())[1:])
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    top_idx, top_weight = _routing(shape, device)
    hidden = torch.randn(shape.tokens, shape.hidden, device=device, dtype=dtype)
    names = args.only or implementations(device, dtype, shape.tokens)
    modules = {name: _experts(shape, name, device, dtype) for name in names}

    def make_call(name: str) -> Callable[[], None]:
        forward = _forward(name, modules[name])

        def call() -> None:
            if args.no_grad:
                with torch.no_grad():
                    forward(hidden, top_idx, top_weight)
                return
            x = hidden.detach().requires_grad_(True)
            forward(x, top_idx, top_weight).float().square().mean().backward()
            modules[name].zero_grad(set_to_none=True)

        return call

    mode = "fwd" if args.no_grad else "fwd+bwd"
    clock = "wall" if device.type == "cuda" else "CPU"
    print(
        f"expert layer {mode} | shape={args.shape} {shape} | device={device} dtype={args.dtype} "
        f"| torch {torch.__version__} | threads={torch.get_num_threads()} | {clock} clock, round-robin"
    )
    results = time_round_robin({name: make_call(name) for name in names}, device, args.warmup, args.repeats)
    print(f"{'implementation':<20} {'ms':>10} {'tokens/s':>14}")
    for name, ms in results.items():
        print(f"{name:<20} {ms:>10.2f} {shape.tokens / (ms / 1000):>14,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
