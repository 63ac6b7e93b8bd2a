"""GPU benchmark: one training step of a random Ring-mini-2.0-shaped model per expert implementation.

LoRA on attention (query_key_value, dense), sequence length 4096, bf16, gradient checkpointing; prints tokens/s
and peak GPU memory for each implementation. Needs a CUDA GPU (exits with a message otherwise).

    python bench/train_step.py                         # all implementations, 20 layers
    python bench/train_step.py --layers 4 --only grouped_mm sorted
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from ring_trl.models.bailing_moe_v2 import BailingMoeV2Config, BailingMoeV2ForCausalLM


def ring_mini_config(layers: int, implementation: str) -> BailingMoeV2Config:
    """Ring-mini-2.0's published shape (vocab, widths, experts, groups), optionally fewer layers."""
    return BailingMoeV2Config(
        num_hidden_layers=layers,
        num_nextn_predict_layers=0,
        expert_layout="fused",
        expert_implementation=implementation,
        attn_implementation="sdpa",
        use_cache=False,
    )


def build_model(layers: int, implementation: str) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = BailingMoeV2ForCausalLM(ring_mini_config(layers, implementation))
    finally:
        torch.set_default_dtype(previous)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["query_key_value", "dense"], lora_dropout=0.0)
    return get_peft_model(model, lora)


def time_steps(model: torch.nn.Module, batch: int, seq: int, steps: int, warmup: int) -> tuple[float, float]:
    """Return (tokens/s, peak GiB) over `steps` optimizer steps after `warmup` ones."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq), device="cuda")
    model.train()
    torch.cuda.reset_peak_memory_stats()
    elapsed = 0.0
    for step in range(warmup + steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= warmup:
            elapsed += time.perf_counter() - start
    return batch * seq * steps / elapsed, torch.cuda.max_memory_allocated() / 2**30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=["grouped_mm", "sorted", "loop"])
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "bench/train_step.py needs a CUDA GPU; on CPU run bench/expert_layer.py instead.", file=sys.stderr
        )
        return 2
    print(
        f"Ring-mini shape, {args.layers} layers, seq {args.seq}, batch {args.batch}, bf16, LoRA on attention, GC"
    )
    print(f"{'implementation':<14} {'tokens/s':>12} {'peak GiB':>10}")
    for implementation in args.only:
        model = build_model(args.layers, implementation)
        tokens_per_s, peak = time_steps(model, args.batch, args.seq, args.steps, args.warmup)
        print(f"{implementation:<14} {tokens_per_s:>12,.0f} {peak:>10.1f}")
        del model
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
