"""An evaluation's three outputs, written together: samples.jsonl, summary.json, report.md.

All three are built in a temp folder next to the output folder and swapped in at the end, so a failed run
leaves the previous result intact and a reader never sees a mix of two runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ring_trl.folders import write_folder_atomically
from ring_trl.runtime import UsageError

OUTPUT_FILES = ("samples.jsonl", "summary.json", "report.md")


def check_output_dir(path: Path) -> None:
    """Refuse to replace a folder that is not an earlier evaluation (it would be deleted)."""
    if path.exists() and (
        not path.is_dir() or (any(path.iterdir()) and not (path / "summary.json").is_file())
    ):
        raise UsageError(f"--output-dir {path} exists and is not an evaluation output; choose another folder")


def write_outputs(path: Path, rows: list[dict[str, Any]], summary: dict[str, Any], report: str) -> Path:
    check_output_dir(path)

    def fill(folder: Path) -> None:
        with open(folder / "samples.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        (folder / "summary.json").write_text(
            json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (folder / "report.md").write_text(report, encoding="utf-8")

    return write_folder_atomically(path, fill)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.1f}"
    return str(value)


def metrics_table(metrics: dict[str, Any]) -> list[str]:
    return ["| metric | value |", "|---|---:|", *(f"| {k} | {_cell(v)} |" for k, v in metrics.items())]


def render_report(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    run = summary["run"]
    lines = [
        f"# Evaluation: {run.get('model') or run.get('completions')} on {run['data']}",
        "",
        f"{summary['counts']['problems']} problems x {summary['counts']['samples_per_problem']} samples"
        + (
            f"; temperature {run['temperature']}, top_p {run['top_p']}, max_new_tokens {run['max_new_tokens']}, "
            f"seed {run['seed']}, backend {run['backend']}"
            if "backend" in run
            else ""
        ),
        "",
        *metrics_table(summary["metrics"]),
        "",
        "avg@n: mean accuracy over all samples. pass@k: unbiased chance that one of k samples is right. "
        "maj@n: the most frequent answer of the n samples is right. truncated_frac: samples that never closed "
        "</think> or hit the token limit (counted wrong). undecidable: checks that timed out or had an unusable "
        "reference (counted wrong, listed below).",
    ]
    if len(summary.get("by_kind", {})) > 1:
        names = list(next(iter(summary["by_kind"].values())))
        lines += ["", "## By answer kind", "", "| kind | " + " | ".join(names) + " |"]
        lines.append("|---|" + "---:|" * len(names))
        for kind, values in summary["by_kind"].items():
            lines.append(f"| {kind} | " + " | ".join(_cell(values.get(n, "")) for n in names) + " |")
    reasons: dict[str, int] = {}
    for row in rows:
        reasons[f"{row['verdict']} ({row['reason']})"] = (
            reasons.get(f"{row['verdict']} ({row['reason']})", 0) + 1
        )
    lines += ["", "## Verdicts", "", "| verdict (reason) | samples |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])]
    if "tokens_per_s" in run:
        lines += [
            "",
            f"Generation: {run['tokens_per_s']} tokens/s, {run['problems_per_s']} problems/s, "
            f"{run['generation_seconds']} s.",
        ]
    return "\n".join(lines) + "\n"
