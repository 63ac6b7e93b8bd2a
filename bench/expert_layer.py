"""Benchmark the routed-expert layer alone (forward + backward) for each expert implementation.

CPU default: a small shape that runs in seconds. On a CUDA GPU the default is Ring-mini-2.0's shape
(8192 tokens, hidden 2048, expert width 512, 256 experts, top-8, bf16).

    python bench/expert_layer.py                      # small shape on CPU
    python bench/expert_layer.py --shape ring-mini    # GPU
"""

from __future__ import annotations

import argparse
import statistics
import time
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
    "ring-mini": Shape(
        tokens=8192, hidden=2048, intermediate=512, experts=256, top_k=8, n_group=8, topk_group=4
    ),
}


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
    layout, implementation = ("per_expert", "sorted") if name == "per_expert_sorted" else ("fused", name)
    config = _config(shape, layout, implementation)
    module = BailingMoeV2FusedExperts(config) if layout == "fused" else BailingMoeV2PerExpertExperts(config)
    for parameter in module.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    return module.to(device=device, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_fwd_bwd(
    module: torch.nn.Module,
    hidden: torch.Tensor,
    top_idx: torch.Tensor,
    top_weight: torch.Tensor,
    warmup: int,
    repeats: int,
) -> float:
    """Median milliseconds of one forward + backward."""
    times = []
    for step in range(warmup + repeats):
        x = hidden.detach().requires_grad_(True)
        _sync(hidden.device)
        start = time.perf_counter()
        module(x, top_idx, top_weight).float().square().mean().backward()
        _sync(hidden.device)
        if step >= warmup:
            times.append((time.perf_counter() - start) * 1000)
        module.zero_grad(set_to_none=True)
    return statistics.median(times)


def implementations(device: torch.device, dtype: torch.dtype, shape: Shape) -> list[str]:
    names = ["loop", "sorted", "per_expert_sorted"]
    if grouped_mm_available(device, dtype) or _grouped_mm_runs(device, dtype, shape):
        names.append("grouped_mm")
    return names


def _grouped_mm_runs(device: torch.device, dtype: torch.dtype, shape: Shape) -> bool:
    """CPU builds of torch may also have a grouped GEMM; try it on a tiny problem."""
    try:
        probe = Shape(16, shape.hidden, shape.intermediate, 4, 2, 2, 1)
        module = _experts(probe, "grouped_mm", device, dtype)
        idx = torch.randint(0, 4, (16, 2), device=device)
        module(
            torch.randn(16, shape.hidden, device=device, dtype=dtype), idx, torch.ones(16, 2, device=device)
        )
        return True
    except (RuntimeError, NotImplementedError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cuda = torch.cuda.is_available()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="ring-mini" if cuda else "small")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16" if cuda else "fp32")
    parser.add_argument("--tokens", type=int, default=None, help="override the shape's token count")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--only", nargs="*", default=None, help="implementations to run (default: all available)"
    )
    args = parser.parse_args(argv)

    shape = SHAPES[args.shape]
    if args.tokens:
        shape = Shape(args.tokens, *list(shape.__dict__.values())[1:])
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    top_idx, top_weight = _routing(shape, device)
    hidden = torch.randn(shape.tokens, shape.hidden, device=device, dtype=dtype)
    names = args.only or implementations(device, dtype, shape)
    print(
        f"expert layer fwd+bwd | shape={args.shape} {shape} | device={device} dtype={args.dtype} "
        f"| torch {torch.__version__} | threads={torch.get_num_threads()}"
    )
    print(f"{'implementation':<20} {'ms':>10} {'tokens/s':>14}")
    for name in names:
        module = _experts(shape, name, device, dtype)
        ms = time_fwd_bwd(module, hidden, top_idx, top_weight, args.warmup, args.repeats)
        print(f"{name:<20} {ms:>10.2f} {shape.tokens / (ms / 1000):>14,.0f}")
        del module
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
