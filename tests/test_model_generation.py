"""Ring 2.0 model: left-padded batched generation with a KV cache, as used by GRPO rollouts."""

from __future__ import annotations

import pytest
import torch

from ring_trl.models.bailing_moe_v2 import BailingMoeV2ForCausalLM
from ring_trl.models.reference import randomize_, toy_config

PAD = 0


def _greedy_without_cache(model: BailingMoeV2ForCausalLM, prompt: list[int], steps: int) -> list[int]:
    ids = torch.tensor([prompt])
    for _ in range(steps):
        logits = model(ids, use_cache=False).logits[0, -1]
        ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
    return ids[0, len(prompt) :].tolist()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_left_padded_batched_generation_matches_stepwise_greedy(attn: str) -> None:
    torch.manual_seed(0)
    model = randomize_(
        BailingMoeV2ForCausalLM(toy_config(attn_implementation=attn, eos_token_id=None)).eval(), seed=0
    )
    prompts = [[5, 17, 33, 8, 41, 9, 60], [12, 7], [70, 3, 22, 90]]
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    steps = 6
    with torch.no_grad():
        generated = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=steps,
            do_sample=False,
            pad_token_id=PAD,
            eos_token_id=None,
        )
    for row, prompt in enumerate(prompts):
        with torch.no_grad():
            expected = _greedy_without_cache(model, prompt, steps)
        assert generated[row, width:].tolist() == expected, f"prompt {row} diverged"


def test_padded_forward_matches_unpadded_forward() -> None:
    """Position ids come from the attention mask, so left padding does not shift a sequence's logits."""
    torch.manual_seed(1)
    model = randomize_(BailingMoeV2ForCausalLM(toy_config()).eval(), seed=1)
    prompt = [5, 17, 33, 8, 41]
    padded = torch.tensor([[PAD, PAD, PAD, *prompt]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        got = model(padded, attention_mask=mask).logits[0, 3:]
        want = model(torch.tensor([prompt])).logits[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
