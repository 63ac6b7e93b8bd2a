"""Atomic publication of a dataset into a shared output folder.

Everything is written into a private temp folder first. Publishing removes the old completion marker,
moves each finished file into place with os.replace (atomic per file), merges the dataset_info.json entry,
and writes `<name>.complete.json` last. A crash at any point leaves no marker for the new run, so a
half-written dataset never looks complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from data_prep.errors import DataPrepError

DATASET_INFO = "dataset_info.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give it the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def merge_dataset_info(out_dir: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Add/replace our entries in dataset_info.json, keeping every other entry (locked against parallel runs)."""
    path = out_dir / DATASET_INFO
    with open(out_dir / f".{DATASET_INFO}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current: dict[str, Any] = {}
        if path.exists():
            try:
                current = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise DataPrepError(
                    f"{path}: existing file is not valid JSON ({err}); not overwriting it"
                ) from err
            if not isinstance(current, dict):
                raise DataPrepError(f"{path}: existing file is not a JSON object; not overwriting it")
        current.update(entries)
        write_json_atomic(path, current)


class DatasetWriter:
    """A temp folder next to the outputs, published all at once by `publish`."""

    def __init__(self, out_dir: str | Path, name: str) -> None:
        self.out_dir = Path(out_dir)
        self.name = name
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=self.out_dir))
        except OSError as err:
            raise DataPrepError(f"{self.out_dir}: cannot create output folder: {err}") from err

    @property
    def marker(self) -> Path:
        return self.out_dir / f"{self.name}.complete.json"

    def path(self, filename: str) -> Path:
        """Where to write `filename` now (inside the temp folder)."""
        return self.tmp / filename

    def publish(self, files: list[str], entries: dict[str, dict[str, Any]], summary: dict[str, Any]) -> None:
        """Move `files` into place, merge dataset_info entries, then write the completion marker."""
        self.marker.unlink(missing_ok=True)
        for stale in self.out_dir.glob(f"{self.name}*"):  # outputs of an earlier run that this one lacks
            if stale.is_file() and stale.name not in files and _belongs_to(stale.name, self.name):
                stale.unlink()
        for filename in files:
            os.replace(self.tmp / filename, self.out_dir / filename)
        merge_dataset_info(self.out_dir, entries)
        write_json_atomic(self.marker, {"dataset": self.name, "files": files, **summary})
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _belongs_to(filename: str, name: str) -> bool:
    rest = filename[len(name) :]
    return rest.startswith(".") or rest.startswith("_val.")


def is_complete(out_dir: str | Path, name: str) -> bool:
    """True when the last run for `name` finished (its marker exists)."""
    return (Path(out_dir) / f"{name}.complete.json").is_file()
