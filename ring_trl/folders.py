"""Folders that appear whole or not at all: model folders, evaluation outputs.

Kept out of ring_trl.models so light tools (`python -m ring_trl.eval --compare`) can use it without
importing torch and the model code.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_folder_atomically(output: Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder in a temp sibling with `fill`, then swap it into place.

    A crash or a bad input never leaves a half-written folder that looks finished. mkdtemp makes 0700
    folders; output folders are shared (other users, containers), so the result is made 0755.
    """
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        fill(staging)
        staging.chmod(0o755)
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return output
