"""Command line: `python -m data_prep build-sft|build-rlvr|build-pref [--config YAML] [flags]`."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from data_prep import errors as E
from data_prep.config import SourceConfig, load_config
from data_prep.errors import DataPrepError, UsageError

EPILOG = """exit status: 0 published (rejected rows, if any, are listed in <name>.rejects.jsonl and counted in
the summary); 1 nothing published (missing input, no rows left, --strict stop, unusable output folder);
2 bad usage (flag, config, format name, missing tokenizer); 3 published, but rows were rejected or a file
was not read to its end and --fail-on-rejects was given."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__, epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", required=True)
    for command, help_text in (
        ("build-sft", "Long-CoT SFT dataset for LLaMA-Factory (sharegpt messages)"),
        ("build-rlvr", "RLVR prompt set (prompt + verifiable answer) for the GRPO trainer"),
        ("build-pref", "preference pairs (prompt, chosen, rejected) for LLaMA-Factory's dpo / rm stages"),
    ):
        sub = commands.add_parser(command, help=help_text, epilog=EPILOG)
        sub.add_argument("--config", help="YAML file with BuildConfig fields (flags override it)")
        sub.add_argument(
            "--input",
            action="append",
            dest="inputs",
            metavar="PATH",
            help="input file or folder (repeatable; replaces the config's inputs)",
        )
        sub.add_argument("--format", help="schema of the --input paths (default: detect)")
        sub.add_argument("--output-dir", dest="output_dir")
        sub.add_argument("--name", dest="dataset_name", help="dataset name (file names, dataset_info key)")
        sub.add_argument("--tokenizer", help="tokenizer folder (default models/ring-tiny)")
        sub.add_argument(
            "--cutoff-len",
            dest="cutoff_len",
            type=int,
            help="drop rows longer than this many tokens (RLVR: prompt tokens; pairs: the longer side's "
            "whole conversation); 0 disables",
        )
        sub.add_argument("--seed", type=int)
        sub.add_argument("--val-size", dest="val_size", type=float, help="fraction (<1) or row count")
        sub.add_argument(
            "--benchmark",
            action="append",
            dest="benchmarks",
            metavar="PATH",
            help="benchmark file for decontamination (repeatable)",
        )
        sub.add_argument("--decontam-n", dest="decontam_ngram", type=int, help="n-gram size (default 8)")
        sub.add_argument(
            "--decontaminate-answer", dest="decontaminate_answer", action="store_true", default=None
        )
        sub.add_argument("--near-dup-threshold", dest="near_dedup_threshold", type=float)
        sub.add_argument("--no-near-dedup", dest="near_dedup", action="store_false", default=None)
        sub.add_argument("--no-verify", dest="verify_answers", action="store_false", default=None)
        sub.add_argument("--workers", type=int, help="worker processes (0 = inline)")
        sub.add_argument("--batch-size", dest="batch_size", type=int)
        sub.add_argument("--limit", type=int, help="read at most N rows per input (dry run)")
        sub.add_argument(
            "--strict",
            action="store_true",
            default=None,
            help="stop at the first malformed row or unreadable file (nothing is published)",
        )
        sub.add_argument(
            "--fail-on-rejects",
            dest="fail_on_rejects",
            action="store_true",
            default=None,
            help="exit 3 (after publishing) when any row was rejected",
        )
        # The older flag: exit 0 despite rejected rows is now the default.
        sub.add_argument("--rejects-ok", dest="rejects_ok", action="store_true", help=argparse.SUPPRESS)
        sub.add_argument("--no-progress", dest="progress", action="store_false", default=None)
        if command == "build-pref":
            _preference_flags(sub)
    return parser


def _preference_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--thinking",
        choices=("keep", "strip", "require"),
        help="the responses' <think> block: keep it (default), strip it, or require it on both sides",
    )
    sub.add_argument(
        "--min-score-margin",
        dest="min_score_margin",
        type=float,
        help="drop pairs whose score_chosen - score_rejected is smaller (pairs without scores pass)",
    )
    sub.add_argument(
        "--pair-dedup",
        dest="pair_dedup",
        choices=("pair", "prompt"),
        help="what makes a duplicate: the same pair (default) or the same prompt",
    )
    sub.add_argument(
        "--from-samples",
        action="append",
        dest="samples",
        metavar="PATH",
        help="on-policy pairs from eval / GRPO samples (samples.jsonl): a better and a worse sample of the "
        "same prompt (repeatable)",
    )
    sub.add_argument(
        "--pairs-per-prompt", dest="pairs_per_prompt", type=int, help="--from-samples: most pairs per prompt"
    )
    sub.add_argument(
        "--reward",
        dest="samples_reward",
        metavar="FUNCTION",
        help="--from-samples: score samples with this reward (package.module:fn or file.py:fn), run isolated",
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) and E.EXIT_USAGE
    overrides: dict[str, Any] = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "config", "format", "rejects_ok", "samples")
    }
    if args.rejects_ok:
        overrides["fail_on_rejects"] = False
    samples = getattr(args, "samples", None) or []
    if args.inputs or samples:
        overrides["inputs"] = [SourceConfig(path=p, format=args.format or "auto") for p in args.inputs or []]
        overrides["inputs"] += [SourceConfig(path=p, format="samples") for p in samples]
    kind = args.command.removeprefix("build-")
    try:
        config = load_config(args.config, overrides, kind)
        if args.format and not args.inputs:
            for source in config.inputs:
                source.format = args.format
            config.validate(kind)
        from data_prep.pipeline import Build

        result = Build(config, kind).run()
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return E.EXIT_USAGE
    except DataPrepError as err:
        print(f"error: {err}", file=sys.stderr)
        return E.EXIT_FATAL
    except KeyboardInterrupt:  # publishing defers Ctrl-C, so the folder holds the old dataset or the new one
        print("interrupted; the output folder holds its last complete publish, if any", file=sys.stderr)
        return 130
    print_summary(result.report, result.out_dir / config.dataset_name)
    return result.exit_code


def print_summary(report: dict[str, Any], out: Any) -> None:
    """What was published and, when rows were dropped, where to look."""
    outputs = report["outputs"]
    print(
        f"{report['dataset']}: {outputs['train_rows']} train / {outputs['val_rows']} val rows, "
        f"{report['rows_rejected']} rejected of {report['rows_read']} read -> {out}.jsonl "
        f"(report {out}.report.md)"
    )
    for reason, count in report["per_filter"].items():
        print(f"  rejected {reason}: {count}")
    for error in report["file_errors"]:
        print(f"  file error (rows before it kept): {error['file']}: {error['detail']}")
    if report["rows_rejected"] or report["file_errors"]:
        print(f"  rejected rows, each with its reason, file and line: {out}.rejects.jsonl")
