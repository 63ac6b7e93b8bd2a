"""Data pipeline throughput: synthetic Long-CoT rows (~8 KB of reasoning each) through the whole build-sft.

Stages measured: read + parse, schema conversion and 8-gram decontamination against 1,000 benchmark prompts,
token-length filter with the target fast tokenizer, exact + MinHash-LSH near dedup, mixing and writing.
Target on 2 CPU cores: 100k rows in under 5 minutes and under 2 GB peak RSS.

    python bench/data_pipeline.py --rows 100000 [--workers 2] [--tokenizer models/ring-tiny]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_prep.config import BuildConfig, SourceConfig  # noqa: E402
from data_prep.pipeline import Build  # noqa: E402

WORDS = [
    "first",
    "then",
    "so",
    "therefore",
    "because",
    "check",
    "verify",
    "compute",
    "solve",
    "answer",
    "result",
    "step",
    "total",
    "integer",
    "prime",
    "even",
    "odd",
    "square",
    "root",
    "fraction",
    "ratio",
    "percent",
    "triangle",
    "circle",
    "area",
    "length",
    "probability",
    "let",
    "we",
    "have",
    "find",
    "show",
    "that",
    "wait",
    "hmm",
    "actually",
    "recall",
    "note",
    "since",
    "hence",
    "thus",
    "final",
    "number",
    "question",
    "problem",
    "think",
    "carefully",
    "again",
    "correct",
    "wrong",
    "value",
    "expression",
    "function",
    "sum",
    "difference",
    "product",
    "quotient",
    "remainder",
    "factor",
    "multiple",
    "digit",
]
NAMES = ["Alice", "Bob", "Carla", "Deepak", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas"]
ITEMS = ["apples", "marbles", "coins", "books", "tickets", "stamps", "pencils", "cards", "shells", "beads"]


def _fragments(rng: random.Random, count: int = 4000) -> list[str]:
    out = []
    for _ in range(count):
        words = rng.choices(WORDS, k=rng.randint(50, 80))
        words.insert(rng.randrange(len(words)), str(rng.randint(0, 99999)))
        out.append(" ".join(words) + ".")
    return out


def _prompt(rng: random.Random, i: int) -> str:
    a, b = rng.choice(NAMES), rng.choice(NAMES)
    item = rng.choice(ITEMS)
    x, y, z = rng.randint(2, 999), rng.randint(2, 999), rng.randint(2, 99)
    return (
        f"Problem {i}: {a} has {x} {item} and gives {b} {y} of them, then buys {z} packs of {item} with "
        f"{x % 17 + 3} in each pack. {b} later returns half of what was received. How many {item} does {a} "
        f"have at the end, and what fraction of the total does {b} keep?"
    )


def generate(folder: Path, rows: int, reasoning_bytes: int, benchmarks: int, seed: int) -> tuple[Path, Path]:
    """Input JSONL with ~3% exact and ~3% near duplicates and ~1% benchmark leaks; benchmark JSONL."""
    rng = random.Random(seed)
    fragments = _fragments(rng)
    per_row = max(1, reasoning_bytes // (sum(len(f) for f in fragments[:100]) // 100 + 1))
    bench_prompts = [
        f"Benchmark item {k}: " + " ".join(rng.choices(WORDS, k=30)) + f" {rng.randint(0, 10**6)}?"
        for k in range(benchmarks)
    ]
    bench_path = folder / "benchmark.jsonl"
    bench_path.write_text("".join(json.dumps({"problem": p}) + "\n" for p in bench_prompts))
    data_path = folder / "synthetic.jsonl"
    recent: list[str] = []
    with open(data_path, "w", encoding="utf-8") as out:
        for i in range(rows):
            roll = rng.random()
            if roll < 0.03 and recent:
                prompt = rng.choice(recent).upper()  # exact duplicate after normalisation
            elif roll < 0.06 and recent:
                prompt = rng.choice(recent).replace(" then buys ", " then orders ")  # near duplicate
            elif roll < 0.07:
                prompt = "Consider this. " + " ".join(rng.choice(bench_prompts).split()[2:14])  # leak
            else:
                prompt = _prompt(rng, i)
                recent = [*recent[-999:], prompt]
            reasoning = " ".join(rng.choices(fragments, k=per_row))
            out.write(
                json.dumps({"prompt": prompt, "reasoning": reasoning, "answer": f"\\boxed{{{i % 1000}}}"})
                + "\n"
            )
    return data_path, bench_path


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reasoning-bytes", type=int, default=8000)
    parser.add_argument("--benchmarks", type=int, default=1000)
    parser.add_argument("--cutoff-len", type=int, default=4096)
    parser.add_argument("--tokenizer", default=None, help="default models/ring-tiny, else a throwaway BPE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder with inputs and outputs")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="ring-data-bench-"))
    try:
        started = time.perf_counter()
        data_path, bench_path = generate(folder, args.rows, args.reasoning_bytes, args.benchmarks, args.seed)
        gen_s = time.perf_counter() - started
        tokenizer = args.tokenizer
        if tokenizer is None:
            tiny = REPO / "models" / "ring-tiny"
            if (tiny / "tokenizer.json").is_file():
                tokenizer = str(tiny)
            else:
                from data_prep.toy_tokenizer import build_toy_tokenizer

                tokenizer = str(build_toy_tokenizer(folder / "tok", [" ".join(WORDS) * 20] * 50))
        size_mb = data_path.stat().st_size / 2**20
        print(
            f"generated {args.rows} rows ({size_mb:.0f} MB) in {gen_s:.1f} s; tokenizer {tokenizer}",
            flush=True,
        )

        config = BuildConfig(
            inputs=[SourceConfig(str(data_path), "simple", name="synthetic")],
            output_dir=str(folder / "out"),
            dataset_name="bench",
            tokenizer=tokenizer,
            cutoff_len=args.cutoff_len,
            benchmarks=[str(bench_path)],
            verify_answers=False,
            workers=args.workers,
            progress=False,
        )
        config.validate()
        started, cpu_before = time.perf_counter(), _cpu_seconds()
        report = Build(config, "sft").run().report
        wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_before
        own_mb, child_mb = _peak_mb()
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    rows = report["rows_read"]
    print(
        f"\nbuild-sft on {rows} rows with {args.workers} worker processes: {wall:.1f} s wall, {rows / wall:.0f} rows/s"
    )
    print(
        f"CPU time {cpu:.1f} s (main + workers) = {cpu / wall:.2f} cores busy on average; "
        f"on {args.workers} otherwise idle cores that is >= {cpu / max(1, args.workers):.0f} s wall"
    )
    print("stage seconds (wall time inside each stage, worker stages summed over workers):")
    for stage, seconds in report["stage_seconds"].items():
        rate = f"{rows / seconds:,.0f} rows/s" if seconds > 0 else "-"
        print(f"  {stage:34s} {seconds:8.1f} s  {rate}")
    print(f"rejected per filter: {report['per_filter']}")
    print(f"kept: {report['outputs']}; token lengths: {report['token_lengths']['measured']}")
    print(
        f"peak RSS: main {own_mb:.0f} MB, largest worker {child_mb:.0f} MB, "
        f"upper bound total {own_mb + args.workers * child_mb:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
