"""Rollout throughput: a real vLLM engine vs HF `generate`, same prompts, same number of samples, same length.

Run in .venv-vllm (`make setup-vllm`), CPU or GPU:

    .venv-vllm/bin/python bench/rollout_engines.py                 # tiny model + a mid-size random Ring config
    .venv-vllm/bin/python bench/rollout_engines.py --rounds 5 --new-tokens 64

Both engines sample at temperature 1 from the full distribution (IcePop's setting) and generate exactly
`--new-tokens` tokens per sample (EOS ignored), so tokens/s compares equal work. Rounds alternate engines
(vLLM, HF, vLLM, HF, ...) and report medians, so background load hits both alike. Engine start-up is reported
separately and is not part of tokens/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from ring_trl.runtime import use_offline_defaults

use_offline_defaults()

import torch  # noqa: E402

PROMPTS = [
    "What is 17 * 23? Think step by step.",
    "Alice has 5 apples and buys 7 more. How many apples does she have?",
    "Find the remainder when 1000 is divided by 7.",
    "The sum of two numbers is 30 and their difference is 4. Find them.",
    "A train travels 60 km in 45 minutes. What is its speed in km per hour?",
    "Is 221 a prime number? Explain.",
    "Simplify the fraction 84 / 126.",
    "What is the area of a circle of radius 3?",
]

# Mid-size: a few hundred MB in fp32, every Ring feature (dense first layer, group-limited MoE + shared expert,
# qk-norm, partial rotary, an MTP layer); dimensions meet the CPU MoE kernel's alignment (multiples of 32).
MID_CONFIG = {
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "num_experts": 32,
    "num_experts_per_tok": 4,
    "n_group": 4,
    "topk_group": 2,
    "moe_intermediate_size": 256,
}


def build_models(folder: Path) -> dict[str, Path]:
    """The tiny model and the mid-size random Ring model (same tokenizer), written under `folder`."""
    from transformers import AutoTokenizer

    from ring_trl.models.bailing_moe_v2 import BailingMoeV2ForCausalLM
    from ring_trl.models.files import auto_map_for, copy_model_code
    from ring_trl.models.tiny import build_tiny_model

    tiny = build_tiny_model(folder / "tiny")
    config = BailingMoeV2ForCausalLM.config_class.from_pretrained(tiny)
    for key, value in MID_CONFIG.items():
        setattr(config, key, value)
    config.auto_map = auto_map_for()
    torch.manual_seed(0)
    mid_model = BailingMoeV2ForCausalLM(config).to(torch.float32)
    mid = folder / "mid"
    mid_model.save_pretrained(mid)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(mid)
    copy_model_code(mid)
    return {"tiny": tiny, "mid": mid}


def hf_round(model, tokenizer, samples: int, new_tokens: int) -> float:
    from transformers import GenerationConfig

    batch = tokenizer([p for p in PROMPTS for _ in range(samples)], return_tensors="pt", padding=True)
    config = GenerationConfig(
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=tokenizer.pad_token_id,
    )
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**batch, generation_config=config)
    elapsed = time.perf_counter() - start
    assert out.shape[1] - batch["input_ids"].shape[1] == new_tokens
    return len(PROMPTS) * samples * new_tokens / elapsed


def vllm_round(llm, samples: int, new_tokens: int) -> float:
    from vllm import SamplingParams

    params = SamplingParams(
        n=samples, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=new_tokens, ignore_eos=True
    )
    start = time.perf_counter()
    outputs = llm.generate(PROMPTS, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    generated = sum(len(choice.token_ids) for output in outputs for choice in output.outputs)
    assert generated == len(PROMPTS) * samples * new_tokens
    return generated / elapsed


def measure(name: str, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ring_trl.grpo.vllm_compat import ring_llm_class

    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    start = time.perf_counter()
    llm = ring_llm_class()(
        model=str(folder),
        dtype="float32",
        max_model_len=512,
        max_num_seqs=len(PROMPTS) * args.samples,
        seed=0,
    )
    startup = time.perf_counter() - start
    vllm_round(llm, args.samples, 4)  # warm-up: first-call kernel set-up is not throughput
    hf_round(model, tokenizer, args.samples, 4)
    engine, hf = [], []
    for _ in range(args.rounds):
        engine.append(vllm_round(llm, args.samples, args.new_tokens))
        hf.append(hf_round(model, tokenizer, args.samples, args.new_tokens))
    result = {
        "params_m": params,
        "startup_s": startup,
        "vllm": statistics.median(engine),
        "hf": statistics.median(hf),
    }
    print(
        f"{name:5s} ({params:.0f}M params, fp32): vLLM {result['vllm']:.0f} tok/s, HF generate {result['hf']:.0f} "
        f"tok/s, ratio {result['vllm'] / result['hf']:.1f}x  ({len(PROMPTS)} prompts x {args.samples} samples x "
        f"{args.new_tokens} tokens, median of {args.rounds} alternating rounds; vLLM start-up {startup:.0f} s)",
        flush=True,
    )
    del llm
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny", "mid"], choices=["tiny", "mid"])
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt (GRPO's num_generations)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as scratch:
        folders = build_models(Path(scratch))
        for name in args.models:
            measure(name, folders[name], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
