"""Both sides of a preference pair train exactly their response tokens, token-exact against the chat template.

The pairs go through LLaMA-Factory's real ranking converter and pairwise processor (what its dpo and rm stages
train on) with the tiny Ring tokenizer, in both Ring formats. Expected values come only from
`tokenizer.apply_chat_template(prompt + [response])` and the rule "the tokens after the last
`<role>ASSISTANT</role>` carry loss" (plus the trained eos of the hub format), as for SFT in test_chat_format.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep.preference import ranking_info_entry
from ring_trl.llamafactory.render import IGNORE_INDEX, render_pairs_with_llamafactory
from tests.test_chat_format import _v2_model_dir, expected_from_chat_template

REPO = Path(__file__).resolve().parents[1]


def _pair(prompt: list[dict[str, str]], chosen: str, rejected: str) -> dict:
    return {
        "prompt": prompt,
        "chosen": {"role": "assistant", "content": chosen},
        "rejected": {"role": "assistant", "content": rejected},
    }


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


CRAFTED = [
    _pair(
        [_user("What is 2 + 3?")],
        "<think>\nTwo plus three.\n2 + 3 = 5.\n</think>\n\nThe answer is 5.",
        "<think>\nMaybe six.\n</think>\n\n6",
    ),
    _pair(
        [{"role": "system", "content": "You are terse."}, _user("Name a prime.")],
        "<think>\n7 has no divisors.\n</think>\n\n7",
        "8",  # a side without reasoning
    ),
    _pair(  # multi-turn: the earlier assistant turn is prompt, never trained
        [_user("Hi"), {"role": "assistant", "content": "Hello!"}, _user("Square of 4?")],
        "<think>\n4 * 4\n</think>\n\n16",
        "<think>\n4 + 4\n</think>\n\n8, a much longer wrong answer that makes the two sides differ in length.",
    ),
    _pair([_user("Reply in one word.")], "Fine.", "I would rather write a whole sentence instead."),
    _pair(  # an on-policy rejected side that ran out of tokens inside its reasoning
        [_user("What is 6 * 7?")], "<think>\n6 * 7 = 42\n</think>\n\n42", "<think>\n6 * 7 is 6 + 6 + 6 and"
    ),
]


def _sample_pairs() -> list[dict]:
    lines = (REPO / "data" / "ring_sample_pref.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:8] if line.strip()]


PAIRS = CRAFTED + _sample_pairs()


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pref-format-data")
    with open(folder / "pairs.jsonl", "w", encoding="utf-8") as handle:
        for pair in PAIRS:
            handle.write(json.dumps(pair, ensure_ascii=False) + "\n")
    info = {"pairs": ranking_info_entry("pairs.jsonl")}
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return folder


def _render(model_dir: Path, template: str, dataset_dir: Path, stage: str):
    return render_pairs_with_llamafactory(
        {
            "model_name_or_path": str(model_dir),
            "trust_remote_code": True,
            "stage": stage,
            "finetuning_type": "lora",
            "dataset": "pairs",
            "dataset_dir": str(dataset_dir),
            "template": template,
            "cutoff_len": 4096,
        }
    )


def _assert_pairs_match(tokenizer, rendered, append_eos: bool) -> None:
    assert len(rendered) == len(PAIRS), "LLaMA-Factory dropped pairs"
    for number, (pair, row) in enumerate(zip(PAIRS, rendered, strict=True)):
        for side, got in (("chosen", row.chosen), ("rejected", row.rejected)):
            messages = [*pair["prompt"], pair[side]]
            ids, labels = expected_from_chat_template(tokenizer, messages, append_eos, last_turn_only=True)
            assert got.input_ids == ids, (
                f"pair {number} {side}: input ids differ\nLF:       {tokenizer.decode(got.input_ids)!r}\n"
                f"template: {tokenizer.decode(ids)!r}"
            )
            assert got.labels == labels, f"pair {number} {side}: loss mask differs from the response tokens"
        prompt_len = row.chosen.labels.index(next(t for t in row.chosen.labels if t != IGNORE_INDEX))
        assert row.rejected.labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
        assert row.chosen.input_ids[:prompt_len] == row.rejected.input_ids[:prompt_len], (
            f"pair {number}: the two sides do not share the prompt"
        )
        assert row.rejected.labels[prompt_len] != IGNORE_INDEX, f"pair {number}: rejected loss starts late"


@pytest.fixture(scope="module")
def v2_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _v2_model_dir(tiny_model_dir, tmp_path_factory.mktemp("v2-pref") / "ring-tiny-v2")


def test_hub_format_pairs_match_chat_template(tiny_model_dir: Path, dataset_dir: Path) -> None:
    tokenizer, rendered = _render(tiny_model_dir, "bailing", dataset_dir, "dpo")
    _assert_pairs_match(tokenizer, rendered, append_eos=True)
    trained = [t for t in rendered[0].chosen.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(trained) == (
        "<think>\nTwo plus three.\n2 + 3 = 5.\n</think>\n\nThe answer is 5." + tokenizer.eos_token
    )
    history = tokenizer.decode(rendered[2].rejected.input_ids)
    assert "<role>ASSISTANT</role>Hello!<role>HUMAN</role>" in history  # no eos inside the prompt


def test_v2_format_pairs_match_chat_template(v2_model_dir: Path, dataset_dir: Path) -> None:
    tokenizer, rendered = _render(v2_model_dir, "ring_v2_sft", dataset_dir, "rm")
    _assert_pairs_match(tokenizer, rendered, append_eos=False)
    trained = tokenizer.decode([t for t in rendered[1].rejected.labels if t != IGNORE_INDEX])
    assert trained == "8<|role_end|>"
    assert tokenizer.decode(rendered[1].chosen.input_ids).startswith(
        "<role>SYSTEM</role>You are terse.\ndetailed thinking on<|role_end|>"
    )
