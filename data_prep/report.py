"""Run statistics: counts per source and per filter, token-length percentiles, histogram."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class SourceStats:
    read: int = 0
    passed_filters: int = 0
    selected_train: int = 0
    selected_val: int = 0
    verify_undecided: int = 0
    rejected: Counter = field(default_factory=Counter)


@dataclass
class RunStats:
    """Collected by the main process while rows stream by."""

    sources: dict[str, SourceStats] = field(default_factory=lambda: defaultdict(SourceStats))
    measured_lengths: list[int] = field(default_factory=list)  # every row that reached the length filter
    kept_lengths: list[int] = field(default_factory=list)  # rows in the final outputs
    unmeasured_too_long: int = 0  # rows the size pre-check proved too long without tokenizing them
    file_errors: list[dict[str, str]] = field(default_factory=list)  # files that could not be read to the end
    first_reject: str | None = None  # "file:line N: reason: detail" of the first rejected row
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def rejected_total(self) -> int:
        return sum(sum(s.rejected.values()) for s in self.sources.values())


def percentiles(values: list[int]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    arr = np.asarray(values)
    p = np.percentile(arr, [50, 90, 95, 99])
    return {
        "count": len(values),
        "mean": round(float(arr.mean()), 1),
        "p50": round(float(p[0]), 1),
        "p90": round(float(p[1]), 1),
        "p95": round(float(p[2]), 1),
        "p99": round(float(p[3]), 1),
        "max": int(arr.max()),
    }


def build_report(
    stats: RunStats, kind: str, name: str, cutoff_len: int, outputs: dict[str, int]
) -> dict[str, Any]:
    per_filter: Counter = Counter()
    for source in stats.sources.values():
        per_filter.update(source.rejected)
    measured = stats.measured_lengths
    unmeasured = stats.unmeasured_too_long
    over = sum(1 for n in measured if n > cutoff_len) + unmeasured
    reached = len(measured) + unmeasured
    return {
        "dataset": name,
        "kind": kind,
        "cutoff_len": cutoff_len,
        "outputs": outputs,
        "rows_read": sum(s.read for s in stats.sources.values()),
        "rows_rejected": stats.rejected_total(),
        "per_filter": dict(sorted(per_filter.items())),
        "file_errors": list(stats.file_errors),
        # short aliases read by scripts/demo.py's summary
        "kept": outputs.get("train_rows", 0) + outputs.get("val_rows", 0),
        "dropped": stats.rejected_total(),
        "dropped_by_reason": dict(sorted(per_filter.items())),
        "per_source": {
            name: {
                "read": s.read,
                "passed_filters": s.passed_filters,
                "selected_train": s.selected_train,
                "selected_val": s.selected_val,
                "verify_undecided": s.verify_undecided,
                "rejected": dict(sorted(s.rejected.items())),
            }
            for name, s in stats.sources.items()
        },
        "token_lengths": {
            "measured": percentiles(measured),
            "kept": percentiles(stats.kept_lengths),
            "too_long_without_tokenizing": unmeasured,
            "share_over_cutoff": round(over / reached, 4) if reached else 0.0,
            "note": "measured = every row that reached the length filter and was tokenized; rows whose size "
            "alone proved them too long are counted in too_long_without_tokenizing; share_over_cutoff = rows "
            "LLaMA-Factory would have truncated at cutoff_len (dropped here instead)",
        },
        "stage_seconds": {k: round(v, 2) for k, v in stats.stage_seconds.items()},
    }


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Data report: {report['dataset']} ({report['kind']})",
        "",
        f"Rows read: {report['rows_read']}; rejected: {report['rows_rejected']}; "
        + ", ".join(f"{k}: {v}" for k, v in report["outputs"].items()),
        "",
        "Answer checks undecidable (math-verify timed out; rows kept and counted): "
        + str(sum(s.get("verify_undecided", 0) for s in report["per_source"].values())),
        "",
        "## Per source",
        "",
        "| source | read | passed filters | train | val | rejected |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, s in report["per_source"].items():
        rejected = ", ".join(f"{k} {v}" for k, v in s["rejected"].items()) or "-"
        lines.append(
            f"| {name} | {s['read']} | {s['passed_filters']} | {s['selected_train']} | {s['selected_val']} | {rejected} |"
        )
    lines += ["", "## Per filter", "", "| reason | rows |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in report["per_filter"].items()] or ["| (none) | 0 |"]
    if report["file_errors"]:
        lines += ["", "## Files not read to the end (rows before the error were kept)", ""]
        lines += [f"- `{e['file']}`: {e['detail']}" for e in report["file_errors"]]
    tl = report["token_lengths"]
    lines += [
        "",
        f"## Token lengths (cutoff_len {report['cutoff_len']})",
        "",
        "| set | count | mean | p50 | p90 | p95 | p99 | max |",
    ]
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key in ("measured", "kept"):
        p = tl[key]
        if p.get("count"):
            lines.append(
                f"| {key} | {p['count']} | {p['mean']} | {p['p50']} | {p['p90']} | {p['p95']} | {p['p99']} | {p['max']} |"
            )
    lines += ["", f"Share over cutoff_len (would have been truncated): {tl['share_over_cutoff']:.2%}", ""]
    return "\n".join(lines)


@dataclass
class HistogramLayout:
    """Bins for the length plot: the bulk of the rows at full resolution, outliers in one overflow bar."""

    edges: np.ndarray
    counts: np.ndarray
    upper: float  # right edge of the binned range
    overflow: int  # rows longer than `upper` (including those never tokenized)
    longest: int | None  # the longest measured row
    cutoff_in_range: bool


def histogram_layout(
    lengths: list[int], cutoff_len: int, unmeasured_over: int = 0, bins: int = 60
) -> HistogramLayout:
    """Clip the x axis just past the 99th percentile, widened to show the cutoff when it is within 4x of that:
    one 13k-token outlier among rows of a few hundred tokens would otherwise squeeze them into one bin."""
    values = np.asarray(lengths, dtype=float)
    longest = float(values.max()) if values.size else 0.0
    bulk = float(np.percentile(values, 99)) * 1.1 if values.size else 0.0
    upper = min(bulk, longest)
    cutoff_in_range = 0 < cutoff_len <= 4 * max(bulk, 1.0)
    if cutoff_in_range:
        upper = max(upper, cutoff_len * 1.05)
    upper = max(upper, 1.0)
    counts, edges = np.histogram(values[values <= upper], bins=bins, range=(0.0, upper))
    overflow = int((values > upper).sum()) + unmeasured_over
    return HistogramLayout(
        edges, counts, upper, overflow, int(longest) if values.size else None, cutoff_in_range
    )


def plot_lengths(
    measured: list[int], cutoff_len: int, path: Path, title: str, unmeasured_over: int = 0
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layout = histogram_layout(measured, cutoff_len, unmeasured_over)
    fig, ax = plt.subplots(figsize=(7, 4))
    width = layout.edges[1] - layout.edges[0]
    ax.bar(layout.edges[:-1], layout.counts, width=width, align="edge", color="#4477aa", label="rows")
    if layout.overflow:
        longest = f", longest measured {layout.longest}" if layout.longest is not None else ""
        ax.bar(
            [layout.upper + width],
            [layout.overflow],
            width=2 * width,
            align="edge",
            color="#bbbbbb",
            hatch="//",
            label=f"> {layout.upper:.0f} tokens: {layout.overflow} rows{longest}",
        )
    if layout.cutoff_in_range:
        ax.axvline(cutoff_len, color="#cc3311", linestyle="--", label=f"cutoff_len {cutoff_len}")
    elif cutoff_len > 0:
        ax.annotate(
            f"cutoff_len {cutoff_len} →",
            xy=(1.0, 0.95),
            xycoords="axes fraction",
            ha="right",
            color="#cc3311",
        )
    ax.set_xlabel("tokens per example (axis clipped; longer rows in the grey bar)")
    ax.set_ylabel("rows")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
