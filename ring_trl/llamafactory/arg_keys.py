"""The recipe keys LLaMA-Factory's own argument parser accepts, so the pre-flight refuses a typo the way it does.

`llamafactory-cli train|export` parses a recipe with transformers' HfArgumentParser over LLaMA-Factory's argument
dataclasses and rejects every key no dataclass declares ("Some keys are not used by the HfArgumentParser: [...]").
The key set here is read from those same dataclasses. Importing them costs ~10 s (torch, transformers, peft), so
the set is cached in the environment, keyed on the installed llamafactory and transformers versions.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import json
import os
import sys
import tempfile
from pathlib import Path

COMMANDS = ("train", "export")
# LLaMA-Factory's own switches (llamafactory/extras/misc.py:is_env_enabled).
_ENABLED = {"true", "y", "1"}


def _env_enabled(name: str) -> bool:
    return os.environ.get(name, "0").lower() in _ENABLED


def extra_keys_allowed() -> bool:
    """ALLOW_EXTRA_ARGS=1 makes LLaMA-Factory ignore unknown keys; the pre-flight then does too."""
    return _env_enabled("ALLOW_EXTRA_ARGS")


def _cache_path(command: str) -> Path:
    versions = "-".join(importlib.metadata.version(name) for name in ("llamafactory", "transformers"))
    mode = "-mca" if _env_enabled("USE_MCA") else ""
    return Path(sys.prefix) / ".ring-recipes-cache" / f"llamafactory-{command}{mode}-keys-{versions}.json"


def _keys_from_llamafactory(command: str) -> frozenset[str]:
    """Exactly the names HfArgumentParser.parse_dict accepts for this command (init fields of each dataclass)."""
    import dataclasses

    from llamafactory.hparams import parser

    if command == "export":
        classes = parser._INFER_ARGS
    else:
        classes = parser._TRAIN_MCA_ARGS if _env_enabled("USE_MCA") else parser._TRAIN_ARGS
    return frozenset(f.name for cls in classes for f in dataclasses.fields(cls) if f.init)


def known_keys(command: str) -> frozenset[str]:
    """The keys `llamafactory-cli <command>` accepts in a recipe (cached after the first call)."""
    if command not in COMMANDS:
        raise ValueError(f"unknown llamafactory-cli command {command!r}; expected one of {COMMANDS}")
    cache = _cache_path(command)
    try:
        return frozenset(json.loads(cache.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass
    keys = _keys_from_llamafactory(command)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(sorted(keys), handle)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only environment: correct, only slower next time
    return keys


def unknown_keys_problem(keys: list[str], command: str) -> str | None:
    """LLaMA-Factory's own message for keys it would refuse, plus the closest known key for each; None if none."""
    if extra_keys_allowed():
        return None
    accepted = known_keys(command)
    unknown = sorted(set(keys) - accepted)
    if not unknown:
        return None
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.75)
        if close:
            hints.append(f"{key} -> {close[0]}")
    hint = f" (did you mean: {', '.join(hints)})" if hints else ""
    return f"Some keys are not used by the HfArgumentParser: {unknown}{hint}"
