"""Evaluator generation throughput (HF backend) on CPU: batch 1 vs batch 8 at the same total samples.

    python bench/eval_generation.py [--tiny models/ring-tiny] [--samples 16] [--max-new-tokens 32] [--rounds 3]

Runs `ring_trl.eval.backends.HFBackend.generate` (the code `python -m ring_trl.eval` uses: prompts rendered
with the folder's chat template, left-padded batches, KV cache) on prompts from data/eval/arithmetic.jsonl, for
two models: the tiny Ring model and a mid-size random Ring config (same tokenizer). Batch sizes alternate
within each round so background load hits both alike; tokens/s is generated tokens (up to eos) over
generation wall time, medians over rounds. Target: batch 8 >= 4x batch 1 on the mid-size config.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ring_trl.eval.backends import HFBackend, SamplingSettings  # noqa: E402
from ring_trl.eval.data import load_problems  # noqa: E402
from ring_trl.models.bailing_moe_v2 import BailingMoeV2Config, BailingMoeV2ForCausalLM  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


MID_VOCAB = 32768  # Ring's vocabulary is 157k; the tiny tokenizer's 2.3k would make the output layer unrealistically cheap


def mid_size_config(tiny: BailingMoeV2Config) -> BailingMoeV2Config:
    """Ring-mini's layout scaled down to ~270M parameters (~45M active per token): width 768, 8 layers
    (the first dense), 64 experts of width 192 with top-4 routing in 8 groups (top-4 groups), one shared
    expert, 12 query / 4 key-value heads of 64, and a 32k vocabulary (ids past the tokenizer decode to "")."""
    return BailingMoeV2Config(
        vocab_size=MID_VOCAB,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=8,
        num_attention_heads=12,
        num_key_value_heads=4,
        head_dim=64,
        partial_rotary_factor=0.5,
        use_qk_norm=True,
        max_position_embeddings=4096,
        rope_theta=600000.0,
        num_experts=64,
        num_experts_per_tok=4,
        n_group=8,
        topk_group=4,
        num_shared_experts=1,
        moe_intermediate_size=192,
        first_k_dense_replace=1,
        routed_scaling_factor=2.5,
        num_nextn_predict_layers=0,
        pad_token_id=tiny.pad_token_id,
        bos_token_id=tiny.bos_token_id,
        eos_token_id=tiny.eos_token_id,
        tie_word_embeddings=False,
        architectures=["BailingMoeV2ForCausalLM"],
    )


def write_mid_size_model(tiny_dir: Path, folder: Path) -> Path:
    torch.manual_seed(0)
    config = mid_size_config(BailingMoeV2Config.from_pretrained(tiny_dir))
    model = BailingMoeV2ForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    model.to(torch.bfloat16).save_pretrained(folder)  # half the bytes on disk; loaded back as fp32
    for name in TOKENIZER_FILES:
        if (tiny_dir / name).exists():
            shutil.copyfile(tiny_dir / name, folder / name)
    print(f"mid-size model: {params / 1e6:.0f}M parameters (see mid_size_config)", flush=True)
    return folder


def throughput(backend: HFBackend, prompts: list[str], batch: int, n: int, max_new_tokens: int) -> float:
    backend.batch_size = batch
    settings = SamplingSettings(n=n, max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0, seed=0)
    _, stats = backend.generate(prompts, settings, progress=False)
    return stats.generated_tokens / stats.seconds


def bare_decode(model: torch.nn.Module, batch: int, steps: int = 16) -> float:
    """Tokens/s of cached decoding steps alone (`model(next_token, past_key_values=...)`, greedy, no generate loop):
    what the model itself allows, apart from what `generate` adds."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 2000, (batch, 40), generator=generator)
    with torch.inference_mode():
        out = model(ids, use_cache=True)
        for timed in (False, True):
            started = time.perf_counter()
            for _ in range(steps if timed else 2):
                next_ids = out.logits[:, -1:].argmax(-1)
                out = model(next_ids, past_key_values=out.past_key_values, use_cache=True)
            if timed:
                return batch * steps / (time.perf_counter() - started)
    raise AssertionError("unreachable")


def bench(name: str, folder: Path, args: argparse.Namespace) -> float:
    backend = HFBackend(folder, batch_size=1, dtype="float32", device="cpu")
    problems = load_problems(REPO / "data" / "eval" / "arithmetic.jsonl", limit=args.samples // 2).problems
    prompts = [backend.render(p.messages) for p in problems]
    throughput(backend, prompts[:1], 8, 1, 4)  # warm-up
    results: dict[int, list[float]] = {1: [], 8: []}
    for _ in range(args.rounds):
        for batch in (1, 8):
            results[batch].append(throughput(backend, prompts, batch, 2, args.max_new_tokens))
            print(f"  {name} batch {batch}: {results[batch][-1]:.1f} tok/s", flush=True)
    one, eight = (statistics.median(results[b]) for b in (1, 8))
    print(
        f"{name:9s} batch 1: {one:8.1f} tok/s   batch 8: {eight:8.1f} tok/s   ratio {eight / one:5.2f}x"
        f"   (rounds: {[round(v) for v in results[1]]} / {[round(v) for v in results[8]]})"
    )
    bare = {batch: statistics.median(bare_decode(backend.model, batch) for _ in range(3)) for batch in (1, 8)}
    print(
        f"{name:9s} model alone (cached decoding steps, no generate loop): batch 1 {bare[1]:.1f} tok/s, "
        f"batch 8 {bare[8]:.1f} tok/s, ratio {bare[8] / bare[1]:.2f}x"
    )
    return eight / one


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", default=str(REPO / "models" / "ring-tiny"))
    parser.add_argument(
        "--samples", type=int, default=16, help="total samples per measurement (problems x 2)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tiny = Path(args.tiny)
    if not (tiny / "config.json").exists():
        print(f"{tiny} missing: run `make tiny-model` first", file=sys.stderr)
        return 2
    print(
        f"torch threads: {torch.get_num_threads()}; {args.samples} samples x {args.max_new_tokens} new tokens"
    )
    bench("tiny", tiny, args)
    with tempfile.TemporaryDirectory() as scratch:
        ratio = bench("mid-size", write_mid_size_model(tiny, Path(scratch)), args)
    print(
        f"target batch 8 >= 4x batch 1 on the mid-size config: {'met' if ratio >= 4 else 'NOT met'} ({ratio:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
