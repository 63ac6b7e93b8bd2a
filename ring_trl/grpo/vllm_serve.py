"""`python -m ring_trl.grpo.vllm_serve --model models/Ring-mini-2.0 [any `trl vllm-serve` option]`

TRL 0.24's `trl vllm-serve` (the server that `vllm_mode: server` talks to) for Ring on vLLM 0.32, run from
.venv-vllm. The HTTP API and the NCCL weight broadcast are TRL's own; on top:
- vllm_compat: import aliases, TRL's sampling keywords, MTP-safe Ring loading, `trust_remote_code` always on;
- weight updates are staged as they arrive and applied as one bulk `reload_weights` (plus the CPU build's expert
  repacking) when the trainer resets the prefix cache, which TRL does once after pushing every weight. vLLM 0.32's
  per-tensor `load_weights` on processed MoE layers is what this avoids (see vllm_sync.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

from ring_trl.runtime import UsageError, run_cli, use_offline_defaults

use_offline_defaults()

if importlib.util.find_spec("vllm") is None:
    MISSING = "vLLM is not installed in this environment; run `make setup-vllm` and use .venv-vllm/bin/python"
    if __name__ == "__main__":
        print(f"python -m ring_trl.grpo.vllm_serve: error: {MISSING}", file=sys.stderr)
        raise SystemExit(2)
    raise ImportError(MISSING)

from ring_trl.grpo.vllm_compat import (  # noqa: E402
    UnsupportedVllmError,
    _register_ring_engine_model,
    check_supported_vllm,
    install_import_aliases,
    ring_llm_class,
    sampling_params,
)
from ring_trl.model_paths import require_model_folder  # noqa: E402

install_import_aliases()

from trl.scripts.vllm_serve import WeightSyncWorkerExtension  # noqa: E402  (needs the aliases above)

TRL_EXTENSION = "trl.scripts.vllm_serve.WeightSyncWorkerExtension"
RING_EXTENSION = "ring_trl.grpo.vllm_serve.RingWeightSyncExtension"

# vLLM imports the worker extension in every worker process before it builds the model: registering the
# MTP-safe Ring model here makes it known there too, whatever the process start method.
_register_ring_engine_model()


class RingWeightSyncExtension(WeightSyncWorkerExtension):
    """TRL's worker extension, but received weights are staged and loaded in one bulk reload."""

    def update_named_param(self, name: str, dtype: str, shape: Any) -> None:
        model = self.model_runner.model
        staged: list = self.__dict__.setdefault("_ring_staged", [])
        model.load_weights = lambda weights: staged.extend(weights)  # TRL's receive, our staging
        try:
            super().update_named_param(name, dtype, shape)
        finally:
            del model.load_weights

    def ring_stage_weights(self, weights: list) -> int:
        """Stage weights handed over directly (no NCCL); used where no GPU communicator exists (tests)."""
        staged: list = self.__dict__.setdefault("_ring_staged", [])
        staged.extend(weights)
        return len(staged)

    def ring_apply_staged_weights(self) -> int:
        from ring_trl.grpo.vllm_sync import repack_cpu_experts

        staged = self.__dict__.pop("_ring_staged", [])
        if not staged:
            return 0
        self.reload_weights(weights_iterator=staged)
        profile = check_supported_vllm()
        if profile is not None and profile.cpu_moe_needs_repack_after_reload and self.device.type == "cpu":
            repack_cpu_experts(self.model_runner.model)
        return len(staged)


def server_llm_class() -> type:
    """RingLLM with the staging worker extension; a prefix-cache reset first applies the staged weights."""
    base = ring_llm_class()

    class RingServerLLM(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("worker_extension_cls") in (None, TRL_EXTENSION):
                kwargs["worker_extension_cls"] = RING_EXTENSION
            kwargs["trust_remote_code"] = True  # Ring folders run our model code through auto_map
            super().__init__(*args, **kwargs)

        def reset_prefix_cache(self, *args: Any, **kwargs: Any) -> Any:
            self.collective_rpc("ring_apply_staged_weights")
            return super().reset_prefix_cache(*args, **kwargs)

    return RingServerLLM


def main(argv: list[str] | None = None) -> int:
    try:
        check_supported_vllm()
    except UnsupportedVllmError as error:
        raise UsageError(str(error)) from error
    serve = importlib.import_module("trl.scripts.vllm_serve")
    serve.LLM = server_llm_class()
    serve.SamplingParams = sampling_params
    parser = serve.make_parser()
    (script_args,) = parser.parse_args_and_config(args=sys.argv[1:] if argv is None else argv)
    require_model_folder(script_args.model)
    serve.main(script_args)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog="python -m ring_trl.grpo.vllm_serve"))
