"""`--compare DIR1 DIR2 ...`: several evaluations side by side (base vs SFT vs GRPO), per-problem flips, a bar plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ring_trl.folders import write_folder_atomically
from ring_trl.runtime import UsageError

FLIPS_LISTED = 10


def load_summary(folder: Path) -> dict[str, Any]:
    path = folder / "summary.json"
    if not path.is_file():
        raise UsageError(
            f"{folder} has no summary.json (run `python -m ring_trl.eval` with --output-dir {folder} first)"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}: not valid JSON ({error.msg})") from error


def _labels(folders: list[Path]) -> list[str]:
    labels = [f.name for f in folders]
    if len(set(labels)) < len(labels):
        labels = [f"{f.parent.name}/{f.name}" for f in folders]
    return labels


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def _flips(base: dict[str, Any], other: dict[str, Any]) -> tuple[list[str], list[str], int]:
    """(better, worse, unchanged) problems by their share of correct samples."""
    better, worse, same = [], [], 0
    for pid, before in base.items():
        after = other.get(pid)
        if after is None:
            continue
        a, b = before["correct"] / before["n"], after["correct"] / after["n"]
        text = f"{pid}: {before['correct']}/{before['n']} -> {after['correct']}/{after['n']}"
        if b > a:
            better.append(text)
        elif b < a:
            worse.append(text)
        else:
            same += 1
    return better, worse, same


def render_comparison(folders: list[Path]) -> tuple[str, list[str], list[dict[str, Any]]]:
    summaries = [load_summary(f) for f in folders]
    labels = _labels(folders)
    names: list[str] = []
    for summary in summaries:
        names += [k for k in summary["metrics"] if k not in names]
    lines = ["| metric | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_fmt(s["metrics"].get(name)) for s in summaries) + " |")
    for label, summary in zip(labels[1:], summaries[1:], strict=True):
        better, worse, same = _flips(summaries[0]["per_problem"], summary["per_problem"])
        lines += [
            "",
            f"Per problem, {labels[0]} -> {label}: {len(better)} better, {len(worse)} worse, {same} unchanged",
        ]
        for title, items in (("better", better), ("worse", worse)):
            if items:
                more = f" (+{len(items) - FLIPS_LISTED} more)" if len(items) > FLIPS_LISTED else ""
                lines.append(f"  {title}: " + "; ".join(items[:FLIPS_LISTED]) + more)
    return "\n".join(lines) + "\n", labels, summaries


def plot_comparison(labels: list[str], summaries: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars of the [0, 1] metrics (accuracy-like and truncated_frac), one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [
        k for k in summaries[0]["metrics"] if k.startswith(("avg@", "pass@", "maj@")) or k == "truncated_frac"
    ]
    x = np.arange(len(names))
    width = 0.8 / max(1, len(summaries))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names) + 2), 4))
    for i, (label, summary) in enumerate(zip(labels, summaries, strict=True)):
        values = [float(summary["metrics"].get(n) or 0.0) for n in names]
        ax.bar(x + (i - (len(summaries) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare(folders: list[Path], output_dir: Path) -> str:
    """Print-ready table; also writes compare.md and compare.png into output_dir."""
    if len(folders) < 2:
        raise UsageError("--compare needs at least two evaluation folders")
    text, labels, summaries = render_comparison(folders)
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / "compare.md").is_file():
        raise UsageError(
            f"--output-dir {output_dir} exists and is not a comparison output; choose another folder"
        )

    def fill(folder: Path) -> None:
        (folder / "compare.md").write_text("# Evaluation comparison\n\n" + text, encoding="utf-8")
        plot_comparison(labels, summaries, folder / "compare.png")

    write_folder_atomically(output_dir, fill)
    return text
