"""`python -m ring_trl.eval`: evaluate a model folder on a benchmark file, grade outside completions, compare runs.

python -m ring_trl.eval --model models/ring-tiny --data data/eval/arithmetic.jsonl --n 4 --k 1,4
python -m ring_trl.eval score --data F --completions C.jsonl --k 1,4 --output-dir D
python -m ring_trl.eval --compare outputs/eval/base outputs/eval/grpo
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ring_trl.runtime import UsageError, run_cli, use_offline_defaults

PROG = "python -m ring_trl.eval"


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in str(text).split(",") if part.strip()})
    except ValueError as error:
        raise UsageError(f"--k must be comma-separated integers like 1,4, got {text!r}") from error
    if not ks or ks[0] < 1:
        raise UsageError(f"--k values must be >= 1, got {text!r}")
    return ks


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", help="benchmark file (.jsonl/.json/.parquet/.csv): MATH-500, AIME, GPQA, RLVR JSONL"
    )
    parser.add_argument("--k", default=None, help="pass@k values, comma-separated (default: 1 and n)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N problems")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed; also shuffles GPQA options")
    parser.add_argument("--output-dir", default=None, help="where samples.jsonl, summary.json, report.md go")
    parser.add_argument(
        "--no-instruction", action="store_true", help="do not append 'put your final answer within \\boxed{}'"
    )


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Evaluate a model folder on a local benchmark file."
    )
    parser.add_argument("--config", help="YAML file with any of these options (flags given here win)")
    parser.add_argument(
        "--model", help="model folder (models/Ring-mini-2.0, outputs/.../final, models/ring-tiny)"
    )
    _common(parser)
    parser.add_argument("--n", type=int, default=1, help="samples per problem")
    parser.add_argument("--max-new-tokens", type=int, default=4096)
    parser.add_argument("--temperature", type=float, default=0.6, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "hf", "vllm"], help="auto: vLLM if installed"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="HF backend: sequences generated together")
    parser.add_argument(
        "--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32"
    )
    parser.add_argument("--device", default="auto", help="HF backend: auto, cpu, cuda, cuda:1")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM backend")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vLLM backend")
    parser.add_argument("--max-model-len", type=int, default=None, help="vLLM backend")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--compare", nargs="+", metavar="DIR", help="compare evaluation folders instead of running"
    )
    return parser


def _score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} score",
        description="Grade completions made elsewhere: JSONL rows {id, completions: [str]}.",
    )
    _common(parser)
    parser.add_argument("--completions", required=True, help='JSONL: {"id": ..., "completions": [str, ...]}')
    parser.add_argument(
        "--answer-only", action="store_true", help="completions are answers without their reasoning block"
    )
    parser.add_argument(
        "--tokenizer", default=None, help="model/tokenizer folder to report lengths in tokens"
    )
    return parser


def _apply_yaml(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if not getattr(args, "config", None):
        return args
    import yaml

    path = Path(args.config)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UsageError(f"--config {path}: {error}") from error
    if not isinstance(loaded, dict):
        raise UsageError(f"--config {path}: expected a mapping of option names to values")
    known = {a.dest for a in parser._actions}
    defaults = {}
    for key, value in loaded.items():
        dest = str(key).replace("-", "_")
        if dest not in known or dest in ("config", "help"):
            raise UsageError(f"--config {path}: unknown option {key!r}")
        defaults[dest] = ",".join(map(str, value)) if dest == "k" and isinstance(value, list) else value
    parser.set_defaults(**defaults)
    return parser.parse_args(argv)


def _ks_for(args: argparse.Namespace, n: int) -> list[int]:
    ks = _ks(args.k) if args.k is not None else sorted({1, n})
    if ks[-1] > n:
        raise UsageError(f"--k {ks[-1]} is larger than the {n} samples per problem (raise --n)")
    return ks


def _default_output(*parts: str) -> Path:
    return Path("outputs") / "eval" / "-".join(p for p in parts if p)


def _summarize(problems, rows, scores, ks, length_unit: str, run: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from ring_trl.eval.metrics import summarize
    from ring_trl.eval.scoring import per_problem_summary

    kinds: dict[str, list[int]] = {}
    n = len(scores[0])
    for index in range(len(problems)):
        kinds.setdefault(rows[index * n]["answer_type"], []).append(index)
    return {
        "metrics": summarize(scores, ks, length_unit),
        "by_kind": {
            kind: summarize([scores[i] for i in ids], ks, length_unit) for kind, ids in kinds.items()
        },
        "counts": {"problems": len(problems), "samples_per_problem": n, "samples": len(rows)},
        "run": run,
        "per_problem": per_problem_summary(problems, scores),
    }


def _finish(output_dir: Path, rows, summary) -> int:  # type: ignore[no-untyped-def]
    from ring_trl.eval.outputs import metrics_table, render_report, write_outputs

    write_outputs(output_dir, rows, summary, render_report(summary, rows))
    print("\n".join(metrics_table(summary["metrics"])))
    print(f"wrote samples.jsonl, summary.json, report.md to {output_dir}")
    return 0


def _say_skipped(code_tasks: list[str]) -> None:
    if code_tasks:
        print(
            f"note: skipped {len(code_tasks)} code task(s), graded by their tests (the code_tests reward), not by an"
            f" answer; the first: {code_tasks[0]}",
            file=sys.stderr,
        )


def run_main(args: argparse.Namespace) -> int:
    from ring_trl.model_paths import require_model_folder

    if not args.model or not args.data:
        raise UsageError("--model and --data are required (or use `score` / --compare)")
    if args.n < 1 or args.max_new_tokens < 1:
        raise UsageError("--n and --max-new-tokens must be >= 1")
    ks = _ks_for(args, args.n)
    model_dir = require_model_folder(args.model)
    output_dir = (
        Path(args.output_dir) if args.output_dir else _default_output(model_dir.name, Path(args.data).stem)
    )
    from ring_trl.eval.data import load_problems
    from ring_trl.eval.outputs import check_output_dir

    problem_file = load_problems(args.data, args.seed, args.limit, not args.no_instruction)
    layout, problems = problem_file.layout, problem_file.problems
    _say_skipped(problem_file.skipped_code_tasks)
    check_output_dir(output_dir)
    from ring_trl.eval.backends import SamplingSettings, make_backend
    from ring_trl.eval.scoring import grade

    started = time.perf_counter()
    backend = make_backend(args.backend, model_dir, vars(args))
    prompts = [backend.render(p.messages) for p in problems]
    settings = SamplingSettings(args.n, args.max_new_tokens, args.temperature, args.top_p, args.seed)
    generated, stats = backend.generate(prompts, settings, progress=not args.no_progress)
    rows, scores = grade(problems, generated)
    run = {
        "command": "run",
        "model": str(args.model),
        "data": str(args.data),
        "layout": layout,
        "backend": backend.name,
        "n": args.n,
        "k": ks,
        "limit": args.limit,
        "seed": args.seed,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
        "skipped_code_tasks": len(problem_file.skipped_code_tasks),
        "prompt_opens_think": prompts[0].rstrip().endswith("<think>"),
        **stats.as_dict(),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return _finish(output_dir, rows, _summarize(problems, rows, scores, ks, "tokens", run))


def _read_completions(path: Path) -> dict[str, tuple[list[str], list[bool]]]:
    if not path.is_file():
        raise UsageError(f"completions file {path} does not exist")
    from ring_trl.eval.data import jsonl_rows

    found: dict[str, tuple[list[str], list[bool]]] = {}
    for where, row in jsonl_rows(path):
        if not isinstance(row, dict) or "id" not in row:
            raise UsageError(f'{where}: expected {{"id": ..., "completions": [str, ...]}}')
        texts = row.get("completions")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise UsageError(f"{where}: 'completions' must be a non-empty list of strings")
        reasons = row.get("finish_reasons") or [None] * len(texts)
        if len(reasons) != len(texts):
            raise UsageError(f"{where}: 'finish_reasons' must have one entry per completion")
        key = str(row["id"])
        if key in found:
            raise UsageError(f"{where}: id {key!r} appears twice")
        found[key] = (texts, [r == "length" for r in reasons])
    if not found:
        raise UsageError(f"{path}: no rows")
    return found


def score_main(args: argparse.Namespace) -> int:
    if not args.data:
        raise UsageError("score needs --data (the benchmark file the completions answer)")
    from ring_trl.eval.data import load_problems
    from ring_trl.eval.scoring import Generated, grade

    problem_file = load_problems(args.data, args.seed, args.limit, not args.no_instruction)
    layout, problems = problem_file.layout, problem_file.problems
    _say_skipped(problem_file.skipped_code_tasks)
    completions = _read_completions(Path(args.completions))
    known = {p.id for p in problems}
    unknown = [key for key in completions if key not in known]
    if unknown:
        raise UsageError(
            f"{args.completions}: id {unknown[0]!r} is not a problem of {args.data} ({len(unknown)} unknown)"
        )
    problems = [p for p in problems if p.id in completions]
    counts = {len(completions[p.id][0]) for p in problems}
    if len(counts) != 1:
        raise UsageError(
            f"{args.completions}: every problem needs the same number of completions, found {sorted(counts)}"
        )
    n = counts.pop()
    ks = _ks_for(args, n)
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, trust_remote_code=True)
    generated = []
    for problem in problems:
        texts, hit_limit = completions[problem.id]
        generated.append(
            [
                Generated(
                    t, len(tokenizer(t, add_special_tokens=False)["input_ids"]) if tokenizer else None, h
                )
                for t, h in zip(texts, hit_limit, strict=True)
            ]
        )
    rows, scores = grade(problems, generated, answer_only=args.answer_only)
    output_dir = (
        Path(args.output_dir) if args.output_dir else _default_output(Path(args.completions).stem, "scored")
    )
    run = {
        "command": "score",
        "completions": str(args.completions),
        "data": str(args.data),
        "layout": layout,
        "n": n,
        "k": ks,
        "limit": args.limit,
        "answer_only": args.answer_only,
    }
    print(f"scored {len(problems)} problems with completions")
    unit = "tokens" if tokenizer else "chars"
    return _finish(output_dir, rows, _summarize(problems, rows, scores, ks, unit, run))


def compare_main(args: argparse.Namespace) -> int:
    from ring_trl.eval.compare import compare

    output_dir = Path(args.output_dir) if args.output_dir else Path("outputs") / "eval" / "compare"
    print(compare([Path(f) for f in args.compare], output_dir), end="")
    print(f"wrote compare.md and compare.png to {output_dir}")
    return 0


def _check_limit(args: argparse.Namespace) -> argparse.Namespace:
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["score"]:
        return score_main(_check_limit(_apply_yaml(_score_parser(), argv[1:])))
    args = _check_limit(_apply_yaml(_run_parser(), argv))
    if args.compare:
        return compare_main(args)
    return run_main(args)


def cli(argv: list[str] | None = None) -> int:
    use_offline_defaults()
    return run_cli(main, argv, PROG)
