"""Training steps of a random Ring-mini-2.0-shaped model, one expert implementation at a time.

LoRA on attention (query_key_value, dense), sequence length 4096, bf16, gradient checkpointing; prints tokens/s
and peak GPU memory for each implementation. The router is kept in fp32, as a bf16 load leaves it. Needs a CUDA
GPU, except with `--dry-run`, which runs the same code on a tiny config on CPU in fp32 (bench/gpu_suite.py uses
both).

    python bench/train_step.py                         # grouped_mm and sorted, 20 layers
    python bench/train_step.py --layers 4 --only grouped_mm sorted loop
    python bench/train_step.py --dry-run
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from typing import Any

import torch

from ring_trl.models.bailing_moe_v2 import BailingMoeV2Config, BailingMoeV2ForCausalLM
from ring_trl.models.bailing_moe_v2.modeling_bailing_moe_v2 import BailingMoeV2Gate


def ring_mini_config(layers: int = 20, implementation: str = "auto", **overrides: Any) -> BailingMoeV2Config:
    """Ring-mini-2.0's published shape (our config defaults are its config.json), optionally fewer layers."""
    fields: dict[str, Any] = {
        "num_hidden_layers": layers,
        "num_nextn_predict_layers": 0,
        "expert_layout": "fused",
        "expert_implementation": implementation,
        "attn_implementation": "sdpa",
        "use_cache": False,
    }
    return BailingMoeV2Config(**{**fields, **overrides})


def tiny_config(implementation: str = "auto", **overrides: Any) -> BailingMoeV2Config:
    """Every Ring-mini feature at toy size, for dry runs on CPU."""
    fields: dict[str, Any] = {
        "vocab_size": 2304,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_experts": 16,
        "num_experts_per_tok": 4,
        "n_group": 4,
        "topk_group": 2,
        "moe_intermediate_size": 32,
        "max_position_embeddings": 4096,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    return ring_mini_config(implementation=implementation, **{**fields, **overrides})


def keep_router_fp32(model: torch.nn.Module) -> torch.nn.Module:
    """What a bf16 `from_pretrained` does for the router (`_keep_in_fp32_modules_strict`), for a model built here."""
    for module in model.modules():
        if isinstance(module, BailingMoeV2Gate):
            module.float()
    return model


def build_model(config: BailingMoeV2Config, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A random model in `dtype` on `device` with LoRA r16 on attention and gradient checkpointing."""
    from peft import LoraConfig, get_peft_model

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = keep_router_fp32(BailingMoeV2ForCausalLM(config))
    finally:
        torch.set_default_dtype(previous)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["query_key_value", "dense"], lora_dropout=0.0)
    return get_peft_model(model, lora)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    model: torch.nn.Module, batch: int, seq: int, steps: int, warmup: int, device: torch.device
) -> dict[str, float | None]:
    """tokens/s over `steps` optimizer steps after `warmup` ones, and the peak GPU memory of the whole run."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=device)
    model.train()
    elapsed = 0.0
    for step in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if step >= warmup:
            elapsed += time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "tokens_per_s": round(batch * seq * steps / elapsed, 1),
        "peak_gib": round(peak, 2) if peak is not None else None,
    }


def measure(
    implementations: list[str],
    make_config: Any,
    device: torch.device,
    dtype: torch.dtype,
    batch: int,
    seq: int,
    steps: int,
    warmup: int,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One fresh model per implementation; results land in `record` as they come (kept if a later one fails)."""
    record = {} if record is None else record
    for implementation in implementations:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        model = build_model(make_config(implementation), device, dtype)
        try:
            record[implementation] = time_steps(model, batch, seq, steps, warmup, device)
        finally:
            del model
            gc.collect()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=["grouped_mm", "sorted"])
    parser.add_argument("--dry-run", action="store_true", help="tiny config, CPU, fp32")
    args = parser.parse_args(argv)
    if args.dry_run:
        device, dtype, seq = torch.device("cpu"), torch.float32, min(args.seq, 64)

        def make_config(implementation: str) -> BailingMoeV2Config:
            return tiny_config(implementation)

    else:
        if not torch.cuda.is_available():
            print("bench/train_step.py needs a CUDA GPU (or --dry-run).", file=sys.stderr)
            return 2
        device, dtype, seq = torch.device("cuda"), torch.bfloat16, args.seq

        def make_config(implementation: str) -> BailingMoeV2Config:
            return ring_mini_config(args.layers, implementation)

    shape = "tiny" if args.dry_run else f"Ring-mini, {args.layers} layers"
    print(f"{shape}, seq {seq}, batch {args.batch}, {dtype}, LoRA on attention, gradient checkpointing")
    print(f"{'implementation':<14} {'tokens/s':>12} {'peak GiB':>10}")
    results = measure(args.only, make_config, device, dtype, args.batch, seq, args.steps, args.warmup)
    for implementation, row in results.items():
        peak = f"{row['peak_gib']:.1f}" if row["peak_gib"] is not None else "-"
        print(f"{implementation:<14} {row['tokens_per_s']:>12,.0f} {peak:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
