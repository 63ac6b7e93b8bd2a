"""Send Ring weights to vLLM under the checkpoint's own names.

Our model keeps routed experts as fused 3D parameters (`mlp.experts.gate_up_proj`, `mlp.experts.down_proj`) for
grouped GEMM, but vLLM's Ring/Bailing loader, like the published checkpoints, names every expert projection
separately (`mlp.experts.{e}.gate_proj.weight`, ...). TRL pushes `named_parameters()` as they are, so without
this split vLLM would never receive updated expert weights and rollouts would come from a stale policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

FUSED_GATE_UP = "mlp.experts.gate_up_proj"
FUSED_DOWN = "mlp.experts.down_proj"


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
