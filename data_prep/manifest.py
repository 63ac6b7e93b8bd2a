"""The manifest of a published dataset: `<name>.manifest.json`, written last by every publish.

It lists each file of the dataset with its size and SHA-256 and the dataset_info.json entries the dataset
owns. A publish first writes it with `state: publishing`, then moves the files into place, then rewrites it
with `state: complete`: a build cut at any point (kill -9, power loss) leaves a manifest that says so.
Consumers (the SFT pre-flight, the GRPO prompt loader, the demo) call `check_dataset_file` before they read a
file: a data_prep file is used only when its manifest is complete and the file is the one it lists.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = "data_prep-manifest/1"
STATE_PUBLISHING = "publishing"
STATE_COMPLETE = "complete"
_HASH_CHUNK = 1 << 20


def manifest_path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f"{name}{MANIFEST_SUFFIX}"


def file_digest(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file, read in 1 MB chunks (about 1 s per GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest's content, or None when the file is missing or not a data_prep manifest."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        return None
    if not isinstance(data.get("files"), dict) or not isinstance(data.get("entries"), list):
        return None
    return data


def manifests_in(out_dir: Path) -> dict[str, dict[str, Any] | None]:
    """Every manifest in a folder by dataset name (None for one that cannot be read)."""
    found: dict[str, dict[str, Any] | None] = {}
    for path in sorted(out_dir.glob(f"*{MANIFEST_SUFFIX}")):
        found[path.name[: -len(MANIFEST_SUFFIX)]] = read_manifest(path)
    return found


def _might_own(name: str, filename: str) -> bool:
    """Whether dataset `name` could own `filename` by data_prep's naming (for unreadable manifests)."""
    rest = filename[len(name) :] if filename.startswith(name) else None
    return rest is not None and (rest.startswith(".") or rest.startswith("_val."))


def check_dataset_file(path: str | Path) -> str | None:
    """None when `path` may be used: no data_prep manifest claims it (a file of your own), or the manifest
    that does is complete and records exactly this file. Otherwise a one-line description of the problem."""
    path = Path(path)
    out_dir = path.parent
    for name, manifest in manifests_in(out_dir).items():
        where = manifest_path(out_dir, name)
        if manifest is None:
            if _might_own(name, path.name):
                return (
                    f"{where}: unreadable manifest for {path.name}; rebuild dataset {name!r} with data_prep"
                )
            continue
        recorded = manifest["files"].get(path.name)
        if recorded is None:
            continue
        if manifest.get("state") != STATE_COMPLETE:
            return (
                f"{path}: the data_prep build of dataset {name!r} was interrupted while publishing "
                f"({where} says {manifest.get('state')!r}); run the build again"
            )
        if not path.is_file():
            return f"{path}: listed in {where} but missing; run the build of dataset {name!r} again"
        actual = file_digest(path)
        if actual != recorded:
            return (
                f"{path}: changed since dataset {name!r} was published ({actual['bytes']} bytes, manifest "
                f"{where} records {recorded.get('bytes')}; contents differ); run the build again"
            )
        return None
    return None


def is_complete(out_dir: str | Path, name: str) -> bool:
    """True when dataset `name` in `out_dir` finished publishing and every file it lists is unchanged."""
    manifest = read_manifest(manifest_path(out_dir, name))
    if manifest is None or manifest.get("state") != STATE_COMPLETE:
        return False
    return all(check_dataset_file(Path(out_dir) / filename) is None for filename in manifest["files"])
