"""One in-process data_prep build with the settings tests want by default, shared by the data_prep test files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_prep.config import BuildConfig, SourceConfig
from data_prep.pipeline import Build


def run_build(inputs: list[SourceConfig], output_dir: Path, kind: str = "sft", **overrides: Any) -> dict:
    """Build dataset `t` in `output_dir` and return its report: no worker processes, no progress bar and no length
    limit unless `overrides` say otherwise, so a test sees only the behaviour it is about."""
    settings: dict[str, Any] = {
        "inputs": inputs,
        "output_dir": str(output_dir),
        "dataset_name": "t",
        "cutoff_len": 0,
        "workers": 0,
        "progress": False,
        **overrides,
    }
    config = BuildConfig(**settings)
    config.validate(kind)
    return Build(config, kind).run().report
