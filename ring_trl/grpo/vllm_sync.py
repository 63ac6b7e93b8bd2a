"""Send Ring weights from the trainer to vLLM: published names, MTP skipped, one bulk reload, CPU repacking.

Names: our model keeps routed experts as fused 3D parameters (`mlp.experts.gate_up_proj`, `mlp.experts.down_proj`)
for grouped GEMM, but vLLM's Ring loader, like the published checkpoints, names every expert projection
separately (`mlp.experts.{e}.gate_proj.weight`, ...). Without the split vLLM would never receive updated experts.

Colocated engine (`sync_colocated_engine`): TRL 0.24 calls `load_weights` once per tensor. On vLLM 0.32 that
fails on the CPU build (processed MoE parameters have no `weight_loader`) and, done tensor by tensor, leaves
`expert_bias` and the experts corrupted. We instead hand every weight (parameters and the `expert_bias` buffers)
to one `reload_weights` call, which restores checkpoint layout, loads, and re-processes each layer. The CPU build
then still serves un-prepacked experts (its repack runs only on the first load), silently wrong by a few percent
per token: `repack_cpu_experts` re-runs it. `check_engine_matches_trainer` is the fp32 self-check that catches
any of this: it compares the engine's and the trainer's log-probs of the same tokens and raises if they differ.

Server (`published_names_for_vllm`): the client pushes every tensor under its published name; the server side
(`python -m ring_trl.grpo.vllm_serve`) skips MTP weights and reloads in bulk.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from ring_trl.grpo.vllm_compat import check_supported_vllm, mtp_layer_index

logger = logging.getLogger(__name__)

FUSED_GATE_UP = "mlp.experts.gate_up_proj"
FUSED_DOWN = "mlp.experts.down_proj"
EXPERT_BIAS = "mlp.gate.expert_bias"
SYNC_CHECK_ENV = "RING_VLLM_SYNC_CHECK"
# Token ids the self-check scores (all below the tiny vocabulary; any Ring vocabulary is larger).
_PROBE_IDS = [5, 9, 14, 20, 33, 41, 7, 3, 120, 64, 250, 11, 90, 17, 2, 48]


class EngineMismatchError(RuntimeError):
    """After a weight sync the engine does not compute what the trainer computes."""


def published_expert_weights(name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Split one fused expert parameter into per-expert (name, weight) pairs; anything else passes through."""
    if tensor.dim() == 3 and name.endswith(FUSED_GATE_UP):
        prefix = name[: -len("gate_up_proj")]
        gate, up = tensor.chunk(2, dim=1)  # [experts, 2 * intermediate, hidden]: gate rows first, then up
        pairs = []
        for expert in range(tensor.shape[0]):
            pairs.append((f"{prefix}{expert}.gate_proj.weight", gate[expert]))
            pairs.append((f"{prefix}{expert}.up_proj.weight", up[expert]))
        return pairs
    if tensor.dim() == 3 and name.endswith(FUSED_DOWN):
        prefix = name[: -len("down_proj")]
        return [(f"{prefix}{expert}.down_proj.weight", tensor[expert]) for expert in range(tensor.shape[0])]
    return [(name, tensor)]


def _expand(weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    for name, tensor in weights:
        yield from published_expert_weights(name, tensor)


@contextmanager
def published_names_for_vllm(vllm_client: Any = None, vllm_model: Any = None) -> Iterator[None]:
    """Within the block, weight pushes to a vLLM server client or a colocated vLLM model use published names."""
    patched: list[tuple[Any, str]] = []

    def patch(owner: Any, attribute: str, wrapper: Callable[[Callable], Callable]) -> None:
        original = getattr(owner, attribute)
        setattr(owner, attribute, wrapper(original))
        patched.append((owner, attribute))

    if vllm_client is not None:
        patch(
            vllm_client,
            "update_named_param",
            lambda original: (
                lambda name, tensor: [original(n, t) for n, t in published_expert_weights(name, tensor)]
            ),
        )
    if vllm_model is not None:
        patch(vllm_model, "load_weights", lambda original: lambda weights: original(list(_expand(weights))))
    try:
        yield
    finally:
        for owner, attribute in reversed(patched):
            delattr(
                owner, attribute
            )  # the instance attribute shadowed the class method: removing it restores it


# ------------------------------------------------------------------------------------- colocated engine
def engine_weights(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every tensor vLLM loads for `model` (a plain, unwrapped Ring model), under published names, MTP left out."""
    layers = int(getattr(model.config, "num_main_layers", model.config.num_hidden_layers))
    tensors = [(name, param.data) for name, param in model.named_parameters()]
    tensors += [(name, buffer) for name, buffer in model.named_buffers() if name.endswith(EXPERT_BIAS)]
    return [(name, tensor) for name, tensor in _expand(tensors) if mtp_layer_index(name, layers) is None]


def _peft_engine_weights(model: Any) -> list[tuple[str, torch.Tensor]]:
    """The merged weights of a PEFT model under the base model's names (the adapter must be merged)."""
    prefix = model.prefix
    tensors = []
    for name, param in model.named_parameters():
        name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        if prefix in name or "original_module" in name:
            continue
        tensors.append((name.replace("modules_to_save.default.", ""), param.data))
    tensors += [
        (name.removeprefix("base_model.model."), buffer)
        for name, buffer in model.named_buffers()
        if name.endswith(EXPERT_BIAS)
    ]
    config = model.get_base_model().config
    layers = int(getattr(config, "num_main_layers", config.num_hidden_layers))
    return [(name, tensor) for name, tensor in _expand(tensors) if mtp_layer_index(name, layers) is None]


def repack_cpu_experts(model: torch.nn.Module) -> int:
    """Re-run the CPU build's MoE weight prepacking on every fused-expert layer; returns how many were repacked.

    vLLM 0.32 prepacks `w13_weight` / `w2_weight` for its CPU grouped GEMM only on the first load; after
    `reload_weights` the layers hold plain checkpoint-layout weights that the kernel still reads as packed."""
    from vllm._custom_ops import cpu_prepack_moe_weight

    repacked = 0
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        kernel = getattr(method, "moe_kernel", None)
        experts = getattr(kernel, "fused_experts", None)
        isa = getattr(experts, "isa", None)
        if isa is None or getattr(experts, "_use_zentorch", False) or not hasattr(module, "w13_weight"):
            continue
        for attribute in ("w13_weight", "w2_weight"):
            weight = getattr(module, attribute)
            weight.data.copy_(cpu_prepack_moe_weight(weight.data, isa))
        repacked += 1
    return repacked


def _engine_on_cpu(llm: Any) -> bool:
    return str(getattr(llm.llm_engine.vllm_config.device_config, "device_type", "")) == "cpu"


def sync_colocated_engine(trainer: Any) -> None:
    """Push the trainer's current weights into its colocated vLLM engine (`trainer.llm`) in one bulk reload."""
    profile = check_supported_vllm()
    if profile is None or not profile.has_inplace_reload:
        raise RuntimeError("the installed vLLM has no in-place weight reload; run `make setup-vllm`")
    if trainer.is_fsdp_enabled:
        raise NotImplementedError(
            "vLLM colocate + FSDP is not supported by ring_trl's weight sync; use DeepSpeed or vllm_mode=server"
        )
    from accelerate.utils import is_peft_model

    model = trainer.model
    deepspeed_plugin = trainer.accelerator.state.deepspeed_plugin
    zero3 = deepspeed_plugin is not None and deepspeed_plugin.zero_stage == 3
    gather: Any = nullcontext()
    if zero3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(model.parameters()))
    llm = trainer.llm
    with gather:
        if is_peft_model(model):
            model.merge_adapter()
            try:
                weights = _peft_engine_weights(model)
                llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
            finally:
                model.unmerge_adapter()
        else:
            weights = engine_weights(trainer.accelerator.unwrap_model(model))
            llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
    if profile.cpu_moe_needs_repack_after_reload and _engine_on_cpu(llm):
        llm.apply_model(repack_cpu_experts)
    llm.reset_prefix_cache()
    tolerance = sync_check_tolerance(trainer.args)
    if tolerance is not None:
        check_engine_matches_trainer(trainer, tolerance)


# ----------------------------------------------------------------------------------------- self-check
def sync_check_tolerance(args: Any) -> float | None:
    """`args.vllm_sync_check` or the RING_VLLM_SYNC_CHECK environment variable: max |logp diff| allowed."""
    value = getattr(args, "vllm_sync_check", None)
    if value is None and os.environ.get(SYNC_CHECK_ENV):
        value = os.environ[SYNC_CHECK_ENV]
    return None if value in (None, "", 0, "0") else float(value)


def engine_prompt_logprobs(llm: Any, token_ids: list[int]) -> torch.Tensor:
    """log p(token_i | tokens_<i) for i >= 1 under the engine (raw model distribution, no temperature)."""
    from vllm import SamplingParams

    (output,) = llm.generate(
        [{"prompt_token_ids": token_ids}],
        SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0),
        use_tqdm=False,
    )
    scored = output.prompt_logprobs[1:]
    return torch.tensor([row[token].logprob for row, token in zip(scored, token_ids[1:], strict=True)])


def trainer_prompt_logprobs(model: torch.nn.Module, token_ids: list[int]) -> torch.Tensor:
    """The same quantity under the training model."""
    device = next(model.parameters()).device
    ids = torch.tensor([token_ids], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    logps = torch.log_softmax(logits[0, :-1], dim=-1)
    return logps.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1).cpu()


def check_engine_matches_trainer(trainer: Any, tolerance: float, token_ids: list[int] | None = None) -> float:
    """Raise EngineMismatchError when engine and trainer log-probs of a fixed probe differ by more than
    `tolerance` (meaningful with an fp32 engine and fp32 training); returns the max difference."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    vocab = int(model.config.vocab_size)
    probe = [token % vocab for token in (token_ids or _PROBE_IDS)]
    engine = engine_prompt_logprobs(trainer.llm, probe)
    trained = trainer_prompt_logprobs(model, probe)
    worst = float((engine - trained).abs().max())
    if not worst <= tolerance:
        raise EngineMismatchError(
            f"vLLM weight sync self-check failed at step {trainer.state.global_step}: engine and trainer "
            f"log-probs differ by up to {worst:.3g} (allowed {tolerance:g}). The engine is not serving the trained "
            "weights; do not trust this run's rollouts."
        )
    logger.info("vLLM sync self-check: max |logp diff| %.3g <= %g", worst, tolerance)
    return worst
