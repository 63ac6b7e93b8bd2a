"""A PNG of reward and IcePop masked fraction per step, from the Trainer's log history."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

PLOTTED = (("reward", "mean reward"), ("icepop/masked_frac", "IcePop masked fraction"))


def write_metrics_plot(log_history: list[dict[str, Any]], path: str | Path) -> Path:
    """Plot each metric in PLOTTED against global step; written atomically (temp file + rename)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(len(PLOTTED), 1, figsize=(7, 2.6 * len(PLOTTED)), sharex=True)
    for axis, (key, label) in zip(axes, PLOTTED, strict=True):
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
        if points:
            steps, values = zip(*points, strict=True)
            axis.plot(steps, values, marker="o", markersize=3)
        else:
            axis.text(0.5, 0.5, f"no '{key}' logged", ha="center", va="center", transform=axis.transAxes)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    handle, temp_name = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(temp_name, dpi=100)
        os.replace(temp_name, path)
    finally:
        plt.close(figure)
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    return path
