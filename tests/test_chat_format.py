"""The token ids and loss mask LLaMA-Factory trains on equal what the checkpoint's own chat template renders.

Both Ring formats, through LLaMA-Factory's real data pipeline (converter, template, supervised processor) on the
tiny Ring tokenizer: the hub format (template `bailing`) and the Ling/Ring V2 SFT format (template `ring_v2_sft`,
registered by the tokenizer hook). Expected values come only from `tokenizer.apply_chat_template` plus the rule
"an assistant turn's tokens after `<role>ASSISTANT</role>` carry loss".
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ring_trl.llamafactory.hook import install_template_hook
from ring_trl.llamafactory.render import IGNORE_INDEX, render_with_llamafactory

REPO = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = REPO / "ring_trl" / "chat_templates"
ASSISTANT_HEADER = "<role>ASSISTANT</role>"


def _conversation(*turns: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    for index, text in enumerate(turns):
        messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": text})
    return messages


CRAFTED = [
    _conversation("What is 2 + 3?", "<think>\nTwo plus three.\n2 + 3 = 5.\n</think>\n\nThe answer is 5."),
    _conversation("Name a prime.", "<think>\n7 has no divisors.\n</think>\n\n7", system="You are terse."),
    _conversation(
        "First: 1 + 1?",
        "<think>\nadd one\n</think>\n\n2",
        "Now 2 * 3?",
        "<think>\nmultiply\n</think>\n\n6",
        "And 6 - 4?",
        "<think>\nsubtract\n6 - 4 = 2\n</think>\n\nThe answer is 2.",
    ),
    _conversation("Hi", "Hello!", "Square of 4?", "<think>\n4 * 4\n</think>\n\n16", system="Be kind."),
    _conversation("Spacing?", "<think>\n\n\nextra newlines around\n\n</think>\n\n\nanswer after blank lines"),
    _conversation("No reasoning here?", "Just an answer."),
    _conversation("Empty reasoning?", "<think>\n\n</think>\n\nStraight answer."),
]


def _sample_rows() -> list[list[dict[str, str]]]:
    lines = (REPO / "data" / "ring_sample_sft.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["messages"] for line in lines if line.strip()]


def _write_dataset(folder: Path, conversations: list[list[dict[str, str]]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "conversations.jsonl", "w", encoding="utf-8") as handle:
        for messages in conversations:
            handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    info = json.loads((REPO / "data" / "dataset_info.json").read_text(encoding="utf-8"))["ring_sample_sft"]
    info = {**info, "file_name": "conversations.jsonl"}
    (folder / "dataset_info.json").write_text(json.dumps({"conversations": info}), encoding="utf-8")


def _v2_model_dir(tiny_model_dir: Path, target: Path) -> Path:
    """The tiny model as `prepare --chat-format ring_v2_sft` would leave it, plus our tokenizer hook."""
    shutil.copytree(tiny_model_dir, target)
    (target / "chat_template.jinja").write_text(
        (TEMPLATES_DIR / "ring_v2_sft.jinja").read_text(), encoding="utf-8"
    )
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config), encoding="utf-8")
    install_template_hook(target)
    return target


def expected_from_chat_template(
    tokenizer, messages: list[dict[str, str]], append_eos: bool, last_turn_only: bool = False
):
    """(input_ids, labels) implied by the chat template: assistant bodies carry loss, nothing else.

    `append_eos` is the hub format's rule: the template has no end-of-turn marker, so the eos the model must emit
    after each answer is trained in place of the token that follows (LLaMA-Factory's efficient_eos) and appended
    after the final answer. `last_turn_only`: one side of a preference pair, where only the final assistant turn
    (the response) is trained and earlier turns are prompt.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    assert ids == list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    spans, cursor = [], 0
    while (found := text.find(ASSISTANT_HEADER, cursor)) != -1:
        start = found + len(ASSISTANT_HEADER)
        following = text.find("<role>", start)
        end = len(text) if following == -1 else following
        spans.append((start, end))
        cursor = end
    if last_turn_only:
        spans = spans[-1:]
    labels = [IGNORE_INDEX] * len(ids)
    for index, (char_start, char_end) in enumerate(encoding["offset_mapping"]):
        if any(start <= char_start and char_end <= end for start, end in spans):
            labels[index] = ids[index]
    if append_eos:
        eos = tokenizer.eos_token_id
        for _, end in spans[:-1]:
            next_token = next(i for i, (s, _) in enumerate(encoding["offset_mapping"]) if s >= end)
            labels[next_token] = eos
        ids.append(eos)
        labels.append(eos)
    return ids, labels


def _render(model_dir: Path, template: str, dataset_dir: Path):
    return render_with_llamafactory(
        {
            "model_name_or_path": str(model_dir),
            "trust_remote_code": True,
            "finetuning_type": "lora",
            "dataset": "conversations",
            "dataset_dir": str(dataset_dir),
            "template": template,
            "cutoff_len": 4096,
        }
    )


CONVERSATIONS = CRAFTED + _sample_rows()


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("chat-format-data")
    _write_dataset(folder, CONVERSATIONS)
    return folder


@pytest.fixture(scope="module")
def hub_rendered(tiny_model_dir: Path, dataset_dir: Path):
    return _render(tiny_model_dir, "bailing", dataset_dir)


@pytest.fixture(scope="module")
def v2_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _v2_model_dir(tiny_model_dir, tmp_path_factory.mktemp("v2") / "ring-tiny-v2")


@pytest.fixture(scope="module")
def v2_rendered(v2_model_dir: Path, dataset_dir: Path):
    return _render(v2_model_dir, "ring_v2_sft", dataset_dir)


def _assert_rows_match(tokenizer, rows, append_eos: bool) -> None:
    assert len(rows) == len(CONVERSATIONS), "LLaMA-Factory dropped rows"
    for number, (messages, row) in enumerate(zip(CONVERSATIONS, rows, strict=True)):
        ids, labels = expected_from_chat_template(tokenizer, messages, append_eos=append_eos)
        assert row.input_ids == ids, (
            f"row {number}: input ids differ\nLF:       {tokenizer.decode(row.input_ids)!r}\n"
            f"template: {tokenizer.decode(ids)!r}"
        )
        assert row.labels == labels, f"row {number}: loss mask differs from the template's assistant turns"


def test_hub_format_matches_chat_template(hub_rendered) -> None:
    tokenizer, rows = hub_rendered
    assert "<|role_end|>" not in (tokenizer.chat_template or "")
    _assert_rows_match(tokenizer, rows, append_eos=True)


def test_v2_format_matches_chat_template(v2_rendered) -> None:
    tokenizer, rows = v2_rendered
    assert "detailed thinking" in tokenizer.chat_template
    _assert_rows_match(tokenizer, rows, append_eos=False)


def test_final_reasoning_is_trained_in_both_formats(hub_rendered, v2_rendered) -> None:
    for tokenizer, rows in (hub_rendered, v2_rendered):
        trained = tokenizer.decode([t for t in rows[0].labels if t != IGNORE_INDEX])
        assert "<think>\nTwo plus three.\n2 + 3 = 5.\n</think>\n\nThe answer is 5." in trained


def test_v2_drops_reasoning_of_earlier_turns_and_keeps_the_last(v2_rendered) -> None:
    tokenizer, rows = v2_rendered
    text = tokenizer.decode(rows[2].input_ids)
    assert "add one" not in text and "multiply" not in text
    assert "<role>ASSISTANT</role>2<|role_end|>" in text
    assert text.endswith(
        "<role>ASSISTANT</role>\n<think>\nsubtract\n6 - 4 = 2\n</think>\n\nThe answer is 2.<|role_end|>"
    )


def test_v2_always_thinks_and_never_appends_thinking_off(v2_rendered) -> None:
    tokenizer, rows = v2_rendered
    for number, row in enumerate(rows):
        text = tokenizer.decode(row.input_ids)
        assert "detailed thinking off" not in text, f"row {number}"
        assert text.count("detailed thinking on<|role_end|>") == 1, f"row {number}"
        assert row.input_ids[-1] == tokenizer.convert_tokens_to_ids("<|role_end|>"), (
            f"row {number}: extra eos"
        )
    assert tokenizer.decode(rows[1].input_ids).startswith(
        "<role>SYSTEM</role>You are terse.\ndetailed thinking on"
    )


def test_hub_keeps_history_verbatim_and_ends_with_eos(hub_rendered) -> None:
    tokenizer, rows = hub_rendered
    text = tokenizer.decode(rows[2].input_ids)
    assert "<think>\nadd one\n</think>\n\n2<role>HUMAN</role>" in text
    assert rows[2].input_ids[-1] == tokenizer.eos_token_id
    assert "<|role_end|>" not in text


def test_template_hook_registers_ring_v2_sft_in_a_fresh_process(
    v2_model_dir: Path, tiny_model_dir: Path
) -> None:
    probe = (
        "import sys\n"
        "from transformers import AutoTokenizer\n"
        "AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "from llamafactory.data.template import TEMPLATES\n"
        "print('ring_v2_sft' in TEMPLATES)\n"
    )
    for folder, expected in ((v2_model_dir, "True"), (tiny_model_dir, "False")):
        result = subprocess.run(
            [sys.executable, "-c", probe, str(folder)], capture_output=True, text=True, check=True, cwd=REPO
        )
        assert result.stdout.strip().splitlines()[-1] == expected, folder
