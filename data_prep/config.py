"""Build settings as dataclasses, loaded from YAML and overridden by command-line flags."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_prep.errors import UsageError
from data_prep.formats import resolve_format
from data_prep.pref_formats import resolve_pref_format

KINDS = ("sft", "rlvr", "pref")


@dataclass
class SourceConfig:
    """One input: a file or folder, its schema, and how much of it goes into the mix."""

    path: str
    format: str = "auto"
    name: str | None = None  # the `source` of each record; defaults to the file name without suffixes
    max_rows: int | None = None  # cap on this source's rows after filtering (a seeded random sample)
    weight: float = 1.0  # <1 keeps that share of the rows, >1 repeats them (upsampling), training split only

    @property
    def source_name(self) -> str:
        if self.name:
            return self.name
        base = Path(self.path.rstrip("/")).name
        return base.split(".")[0] or base


@dataclass
class BuildConfig:
    """Everything a build-sft / build-rlvr run needs. Field names are the YAML keys."""

    inputs: list[SourceConfig] = field(default_factory=list)
    kind: str | None = None  # "sft", "rlvr" or "pref": when set, the other commands refuse this config
    output_dir: str = "outputs/data"
    dataset_name: str = "ring_sft"
    tokenizer: str | None = None  # folder with tokenizer.json; default models/ring-tiny
    cutoff_len: int = 32768  # SFT: max tokens of the whole example; RLVR: max tokens of the prompt
    seed: int = 42
    val_size: float = 0.0  # a fraction (<1) or a row count (>=1)
    shuffle: bool = True
    verify_answers: bool = True  # SFT: answer must match the reference; RLVR: reference must parse
    verify_timeout_s: int = 5
    exact_dedup: bool = True
    near_dedup: bool = True
    near_dedup_threshold: float = 0.85
    minhash_num_perm: int = 128
    minhash_ngram: int = 3
    dedup_on: str = "prompt"  # "prompt" or "prompt_answer"
    benchmarks: list[str] = field(default_factory=list)
    decontam_ngram: int = 8
    decontaminate_answer: bool = False
    default_task: str = "math"  # RLVR rows without a `task` field and without tests
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    batch_size: int = 256
    limit: int | None = None  # read at most this many rows per input (dry runs)
    strict: bool = False  # stop (exit 1, nothing published) at the first malformed row or unreadable file
    fail_on_rejects: bool = False  # exit 3 after publishing when any row was rejected or a file had an error
    progress: bool = True
    # build-pref only (docs/rlhf.md)
    thinking: str = "keep"  # keep | strip | require the <think> block of each response
    min_score_margin: float | None = None  # drop pairs with score_chosen - score_rejected below this
    pair_dedup: str = "pair"  # duplicates are the same prompt+chosen+rejected ("pair") or the same prompt
    pairs_per_prompt: int = 1  # --from-samples: at most this many pairs from one prompt's samples
    samples_reward: str | None = (
        None  # --from-samples: score samples with this reward (module:fn, file.py:fn)
    )

    def validate(self, command: str | None = None) -> None:
        """Check every setting; `command` (sft, rlvr, pref) picks the format names when `kind` is unset."""
        if not self.inputs:
            raise UsageError("no inputs: give --input PATH or an `inputs:` list in the config")
        kind = self.kind or command
        for source in self.inputs:
            source.format = (resolve_pref_format if kind == "pref" else resolve_format)(source.format)
            if source.max_rows is not None and source.max_rows < 0:
                raise UsageError(f"{source.path}: max_rows must be >= 0")
            if source.weight < 0:
                raise UsageError(f"{source.path}: weight must be >= 0")
        names = [s.source_name for s in self.inputs]
        if len(set(names)) != len(names):
            raise UsageError(f"two inputs share a source name ({names}); set `name:` on them")
        if not 0.0 < self.near_dedup_threshold <= 1.0:
            raise UsageError("near_dedup_threshold must be in (0, 1]")
        if self.dedup_on not in ("prompt", "prompt_answer"):
            raise UsageError("dedup_on must be 'prompt' or 'prompt_answer'")
        if self.kind not in (None, *KINDS):
            raise UsageError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.thinking not in ("keep", "strip", "require"):
            raise UsageError(f"thinking must be keep, strip or require, got {self.thinking!r}")
        if self.pair_dedup not in ("pair", "prompt"):
            raise UsageError(f"pair_dedup must be 'pair' or 'prompt', got {self.pair_dedup!r}")
        if self.pairs_per_prompt < 1:
            raise UsageError("pairs_per_prompt must be >= 1")
        if self.default_task not in ("math", "code"):
            raise UsageError("default_task must be 'math' or 'code'")
        if self.val_size < 0:
            raise UsageError("val_size must be >= 0")
        if self.batch_size < 1 or self.decontam_ngram < 1 or self.minhash_ngram < 1:
            raise UsageError("batch_size, decontam_ngram and minhash_ngram must be >= 1")
        if not self.dataset_name or "/" in self.dataset_name:
            raise UsageError(f"bad dataset_name {self.dataset_name!r}")


def _source(value: Any) -> SourceConfig:
    if isinstance(value, str):
        return SourceConfig(path=value)
    if not isinstance(value, dict) or "path" not in value:
        raise UsageError(f"each input needs a `path`: {value!r}")
    known = {f.name for f in dataclasses.fields(SourceConfig)}
    unknown = set(value) - known
    if unknown:
        raise UsageError(f"unknown input keys {sorted(unknown)}; known: {sorted(known)}")
    return SourceConfig(**value)


def load_config(path: str | None, overrides: dict[str, Any], command: str | None = None) -> BuildConfig:
    """YAML file (optional) then flag overrides (None values are ignored)."""
    data: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise UsageError(f"{path}: cannot read config: {err}") from err
        except yaml.YAMLError as err:
            raise UsageError(f"{path}: invalid YAML: {err}") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise UsageError(f"{path}: the config must be a mapping of settings")
        data = loaded or {}
    if "rejects_ok" in data:  # the older spelling: rejected rows used to fail the run unless it was true
        data.setdefault("fail_on_rejects", not data.pop("rejects_ok"))
    known = {f.name for f in dataclasses.fields(BuildConfig)}
    unknown = set(data) - known
    if unknown:
        raise UsageError(f"{path}: unknown settings {sorted(unknown)}")
    data["inputs"] = [_source(v) for v in data.get("inputs") or []]
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    try:
        config = BuildConfig(**data)
    except TypeError as err:
        raise UsageError(f"bad config: {err}") from err
    config.validate(command)
    return config
