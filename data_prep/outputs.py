"""Publishing a dataset into a shared output folder without ever exposing a half-written one.

A run writes everything into its own temp folder `.<name>.data_prep-tmp-*` inside the output folder (so every
move is a same-filesystem rename), holding a lock on it for its lifetime; the next run removes temp folders
whose owner is gone (killed, crashed). `publish` then, under the folder's lock:

1. checks everything that can fail before touching anything: the existing dataset_info.json parses as an
   object, no target is a folder, no file or dataset_info entry belongs to another dataset's manifest; it
   prepares the merged dataset_info.json and the new manifest (sizes, SHA-256) as temp files;
2. writes the manifest with `state: publishing`, moves the files into place, swaps in dataset_info.json,
   removes the files and entries that only the previous build of this dataset had (per its manifest; never
   by name pattern, so `math` never touches `math.v2`), and rewrites the manifest with `state: complete`.

Step 2 runs with Ctrl-C/SIGTERM deferred, and any error in it restores the previous files (kept as hard
links) and manifest. A kill -9 inside step 2 leaves `state: publishing`, which every consumer refuses
(`data_prep.manifest.check_dataset_file`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from data_prep.errors import DataPrepError
from data_prep.manifest import (
    MANIFEST_FORMAT,
    STATE_COMPLETE,
    STATE_PUBLISHING,
    file_digest,
    is_complete,
    manifest_path,
    manifests_in,
)

__all__ = [
    "DATASET_INFO",
    "DatasetWriter",
    "clean_stale_temp_folders",
    "is_complete",
    "sharegpt_info_entry",
    "write_json_atomic",
]

DATASET_INFO = "dataset_info.json"
_LOCK_NAME = f".{DATASET_INFO}.lock"
_TMP_MARK = ".data_prep-tmp-"
_OWNER_LOCK = ".owner.lock"
_STALE_UNLOCKED_S = 600  # a temp folder without its lock file (cut before it was created) is stale after this
_PREVIOUS = ".previous"


def sharegpt_info_entry(filename: str, columns: dict[str, str], **extra: Any) -> dict[str, Any]:
    """A dataset_info.json entry for a file of OpenAI-style messages (`role`/`content`), LLaMA-Factory's sharegpt
    reader with our tag names; `extra` adds keys such as `ranking: True` for preference pairs."""
    return {
        "file_name": filename,
        "formatting": "sharegpt",
        **extra,
        "columns": columns,
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename over `path`."""
    tmp = _write_json_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_json_temp(path: Path, data: Any) -> Path:
    """`data` as JSON in a fsynced temp file next to `path`, with the usual permissions; returns its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give it the usual permissions
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_dataset_info(out_dir: Path) -> dict[str, Any]:
    """The folder's dataset_info.json ({} when absent); an unreadable one stops the run before any change."""
    path = out_dir / DATASET_INFO
    if not path.exists():
        return {}
    try:
        current = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataPrepError(f"{path}: existing file is not valid JSON ({err}); not overwriting it") from err
    if not isinstance(current, dict):
        raise DataPrepError(f"{path}: existing file is not a JSON object; not overwriting it")
    return current


@contextlib.contextmanager
def _folder_lock(out_dir: Path) -> Iterator[None]:
    """One publish at a time per output folder (parallel builds of different datasets share dataset_info)."""
    with open(out_dir / _LOCK_NAME, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C / SIGTERM / SIGHUP wait until the block is done (only the main thread can set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    names = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda number, _frame: caught.append(number)) for sig in names}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            os.kill(os.getpid(), sig)


def _owner_gone(folder: Path) -> bool:
    """A temp folder's run is over when nobody holds its lock (the kernel drops it when a process dies)."""
    lock_path = folder / _OWNER_LOCK
    try:
        handle = open(lock_path, "r+")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            return time.time() - folder.stat().st_mtime > _STALE_UNLOCKED_S
        return False
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True


def clean_stale_temp_folders(out_dir: Path) -> list[Path]:
    """Remove the temp folders (spools, unpublished files) of data_prep runs that were killed."""
    removed = []
    for folder in out_dir.glob(f".*{_TMP_MARK}*"):
        if folder.is_dir() and _owner_gone(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@dataclass
class _Plan:
    """Everything publish will do, decided and prepared before the first file is replaced."""

    files: list[str]
    stale_files: list[str]
    info_tmp: Path
    manifest: dict[str, Any]
    previous_manifest: dict[str, Any] | None
    backups: dict[str, Path] = field(default_factory=dict)  # file name -> hard link of the previous version
    legacy_marker: Path | None = None


class DatasetWriter:
    """A locked temp folder next to the outputs, published all at once by `publish`."""

    def __init__(self, out_dir: str | Path, name: str) -> None:
        self.out_dir = Path(out_dir)
        self.name = name
        self._owner: IO[str] | None = None
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            clean_stale_temp_folders(self.out_dir)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{name}{_TMP_MARK}", dir=self.out_dir))
            self._owner = open(self.tmp / _OWNER_LOCK, "w")  # noqa: SIM115 - held until discard()
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise DataPrepError(
                f"{self.out_dir}: cannot create a temp folder for the outputs: {err}"
            ) from err

    @property
    def manifest(self) -> Path:
        return manifest_path(self.out_dir, self.name)

    def path(self, filename: str) -> Path:
        """Where to write `filename` now (inside the temp folder)."""
        return self.tmp / filename

    def publish(self, files: list[str], entries: dict[str, dict[str, Any]], summary: dict[str, Any]) -> None:
        """Move `files` into place and merge the dataset_info entries: all or nothing (see the module doc)."""
        with _folder_lock(self.out_dir):
            plan = self._plan(files, entries, summary)
            try:
                with _signals_deferred():
                    self._apply(plan)
            finally:
                plan.info_tmp.unlink(missing_ok=True)
        self.discard()

    # -- step 1: checks and preparation ---------------------------------------------------------------

    def _plan(self, files: list[str], entries: dict[str, dict[str, Any]], summary: dict[str, Any]) -> _Plan:
        out = self.out_dir
        info = read_dataset_info(out)
        previous, others = None, {}
        for name, manifest in manifests_in(out).items():
            if name == self.name:
                previous = manifest
            elif manifest is not None:
                others[name] = manifest
        for filename in files:
            if (out / filename).is_dir():
                raise DataPrepError(f"{out / filename}: is a folder; cannot publish a file there")
            owner = next((n for n, m in others.items() if filename in m["files"]), None)
            if owner is not None:
                raise DataPrepError(
                    f"{out / filename} belongs to dataset {owner!r} ({manifest_path(out, owner)}); "
                    f"choose another dataset_name than {self.name!r}"
                )
        for entry in entries:
            owner = next((n for n, m in others.items() if entry in m["entries"]), None)
            if owner is not None:
                raise DataPrepError(
                    f"{out / DATASET_INFO}: entry {entry!r} belongs to dataset {owner!r}; "
                    f"choose another dataset_name than {self.name!r}"
                )
        legacy = out / f"{self.name}.complete.json"  # the marker of data_prep before manifests
        old_files = list(previous["files"]) if previous else _legacy_files(legacy)
        old_entries = list(previous["entries"]) if previous else []
        stale_files = [f for f in old_files if f not in files and (out / f).is_file()]
        for entry in old_entries:
            if entry not in entries:
                info.pop(entry, None)
        info.update(entries)
        manifest = {
            "format": MANIFEST_FORMAT,
            "dataset": self.name,
            "state": STATE_PUBLISHING,
            "published_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "entries": sorted(entries),
            "files": {f: file_digest(self.tmp / f) for f in files},
            **summary,
        }
        plan = _Plan(
            files,
            stale_files,
            _write_json_temp(out / DATASET_INFO, info),
            manifest,
            previous,
            legacy_marker=legacy if legacy.is_file() else None,
        )
        backup_dir = self.tmp / _PREVIOUS
        backup_dir.mkdir()
        for filename in [*files, *stale_files, DATASET_INFO]:
            if (out / filename).is_file():
                with contextlib.suppress(
                    OSError
                ):  # no hard links here: no rollback, the manifest still guards
                    os.link(out / filename, backup_dir / filename)
                    plan.backups[filename] = backup_dir / filename
        return plan

    # -- step 2: the moves ----------------------------------------------------------------------------

    def _apply(self, plan: _Plan) -> None:
        out = self.out_dir
        write_json_atomic(self.manifest, plan.manifest)
        try:
            for filename in plan.files:
                os.replace(self.tmp / filename, out / filename)
            os.replace(plan.info_tmp, out / DATASET_INFO)
            for filename in plan.stale_files:
                (out / filename).unlink(missing_ok=True)
            write_json_atomic(self.manifest, {**plan.manifest, "state": STATE_COMPLETE})
        except BaseException:
            self._roll_back(plan)
            raise
        if plan.legacy_marker is not None:
            plan.legacy_marker.unlink(missing_ok=True)

    def _roll_back(self, plan: _Plan) -> None:
        """Put the previous dataset back as it was. Each step on its own: one that fails does not stop the
        others, and a file left new is caught by the previous manifest's hashes."""
        out = self.out_dir
        moved = {f for f in plan.files if not (self.tmp / f).exists()}
        if not plan.info_tmp.exists():
            moved.add(DATASET_INFO)
        for filename in [*plan.files, *plan.stale_files, DATASET_INFO]:
            backup = plan.backups.get(filename)
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, out / filename)
                elif filename in moved:  # a new file where there was none before
                    (out / filename).unlink()
        with contextlib.suppress(OSError):
            if plan.previous_manifest is not None:
                write_json_atomic(self.manifest, plan.previous_manifest)
            else:
                self.manifest.unlink(missing_ok=True)

    def discard(self) -> None:
        if self._owner is not None:
            self._owner.close()
            self._owner = None
        shutil.rmtree(self.tmp, ignore_errors=True)


def _legacy_files(marker: Path) -> list[str]:
    """Files listed by an older data_prep's `<name>.complete.json` (its previous build's outputs)."""
    try:
        files = json.loads(marker.read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str) and "/" not in f]
