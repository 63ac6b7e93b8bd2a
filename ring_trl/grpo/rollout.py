"""Rollouts with HF `generate` that also record the sampler's log-probs, and an engine-mismatch switch.

IcePop needs log pi_infer(y_t): the log-prob of each sampled token under the distribution it was actually
drawn from. With vLLM that comes back from the engine; with HF `generate` we record it here. The recorder
must see the scores after every logits processor (it is placed last; sampling.py makes sure `generate` adds
none after it), and holds only one [batch, vocab] row of log-probs at a time instead of every step's scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from transformers import LogitsProcessor

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class SampledTokenLogprobRecorder(LogitsProcessor):
    """Records log softmax(final scores) at the token sampled from them, one step behind generation."""

    def __init__(self) -> None:
        self._pending: torch.Tensor | None = None
        self._steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._pending is not None:
            self._steps.append(self._pick(self._pending, input_ids[:, -1]))
        self._pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    @staticmethod
    def _pick(logprobs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    def collect(self, sequences: torch.Tensor, prompt_length: int) -> torch.Tensor:
        """Log-probs [batch, new_tokens] of the generated part of `sequences` (returned by `generate`)."""
        new_tokens = sequences.size(1) - prompt_length
        steps = list(self._steps)
        if self._pending is not None and len(steps) < new_tokens:
            steps.append(self._pick(self._pending, sequences[:, prompt_length + len(steps)]))
        if len(steps) != new_tokens:
            raise RuntimeError(
                f"recorded {len(steps)} sampling steps for {new_tokens} generated tokens: another logits "
                "processor or a stopping rule bypassed the recorder"
            )
        self._pending, self._steps = None, []
        if not steps:
            return sequences.new_zeros((sequences.size(0), 0), dtype=torch.float32)
        return torch.stack(steps, dim=1)


def _set_attn_implementation(model: torch.nn.Module, name: str) -> None:
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter(name)
    else:
        model.config._attn_implementation = name


@contextmanager
def rollout_engine(
    model: torch.nn.Module,
    dtype: str | None = None,
    attn_implementation: str | None = None,
) -> Iterator[None]:
    """Run the block as a different "inference engine": autocast precision and/or attention implementation.

    Used to reproduce the train/inference mismatch of a separate engine (vLLM, SGLang) on one machine.
    """
    previous_attn = getattr(model.config, "_attn_implementation", None)
    if attn_implementation is not None and attn_implementation != previous_attn:
        _set_attn_implementation(model, attn_implementation)
    device_type = next(model.parameters()).device.type
    if dtype in _AUTOCAST_DTYPES:
        precision = torch.autocast(device_type=device_type, dtype=_AUTOCAST_DTYPES[dtype])
    elif dtype == "fp32":
        precision = torch.autocast(device_type=device_type, enabled=False)
    else:
        precision = nullcontext()
    try:
        with precision:
            yield
    finally:
        if (
            attn_implementation is not None
            and previous_attn is not None
            and attn_implementation != previous_attn
        ):
            _set_attn_implementation(model, previous_attn)


def completion_mask_after_eos(completion_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 up to and including the first EOS of each row, 0 after it (rows with no EOS are all 1)."""
    is_eos = completion_ids == eos_token_id
    length = completion_ids.size(1)
    first_eos = torch.where(
        is_eos.any(dim=1),
        is_eos.int().argmax(dim=1),
        torch.full_like(is_eos[:, 0], length, dtype=torch.long),
    )
    positions = torch.arange(length, device=completion_ids.device).unsqueeze(0)
    return (positions <= first_eos.unsqueeze(1)).long()
