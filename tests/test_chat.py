"""`python -m ring_trl.chat` / `make chat`: the folder's own template, streamed text, reasoning apart, many turns."""

from __future__ import annotations

import io
import itertools
import json
import shutil
from pathlib import Path

import pytest

from ring_trl.chat.__main__ import PROG, main
from ring_trl.chat.session import stream_pieces
from ring_trl.chat.thinking import ThinkingSplitter, assistant_content, prompt_opens_thinking
from ring_trl.runtime import run_cli
from tests.conftest import REPO_ROOT

HUB_STYLE = "Let me add.\n2 + 3 = 5.\n</think>\n\nThe answer is 5."
V2_STYLE = "\n<think>\nTwo and three.\n</think>\n\nFive."


def _split_in_pieces(text: str, cuts: tuple[int, ...], thinking: bool) -> ThinkingSplitter:
    splitter = ThinkingSplitter(thinking=thinking)
    bounds = [0, *cuts, len(text)]
    for start, end in itertools.pairwise(bounds):
        splitter.feed(text[start:end])
    splitter.finish()
    return splitter


@pytest.mark.parametrize(("text", "thinking"), [(HUB_STYLE, True), (V2_STYLE, False)])
def test_reasoning_and_answer_split_the_same_wherever_the_stream_is_cut(text: str, thinking: bool) -> None:
    expected = (
        "Two and three." if not thinking else "Let me add.\n2 + 3 = 5.",
        "Five." if not thinking else "The answer is 5.",
    )
    for cut in range(1, len(text)):
        splitter = _split_in_pieces(text, (cut,), thinking)
        assert (splitter.reasoning, splitter.answer) == expected, cut
    one_char_at_a_time = _split_in_pieces(text, tuple(range(1, len(text))), thinking)
    assert (one_char_at_a_time.reasoning, one_char_at_a_time.answer) == expected


def test_unfinished_reasoning_stays_reasoning_and_a_stray_partial_tag_is_kept() -> None:
    splitter = _split_in_pieces("still thinking </thi", (), thinking=True)
    assert splitter.reasoning == "still thinking </thi" and splitter.answer == ""
    assert assistant_content("r", "a") == "<think>\nr\n</think>\n\na"
    assert assistant_content("", "a") == "a"


def test_hub_and_v2_generation_prompts(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": assistant_content("greet", "Hello")},
        {"role": "user", "content": "Again"},
    ]
    hub = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt_opens_thinking(hub), hub  # <role>ASSISTANT</role><think>\n
    v2_template = (REPO_ROOT / "ring_trl" / "chat_templates" / "ring_v2_sft.jinja").read_text()
    v2 = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, chat_template=v2_template
    )
    assert not prompt_opens_thinking(v2), v2


def test_streamed_tokens_of_the_real_tokenizer_split_into_reasoning_and_answer(tiny_model_dir: Path) -> None:
    """What generate() pushes into the streamer, token by token, including the eos it stops on."""
    import torch
    from transformers import AutoTokenizer, TextIteratorStreamer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer.encode(HUB_STYLE + tokenizer.eos_token, add_special_tokens=False)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=False)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt, skipped
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    pieces: list[tuple[str, str]] = []
    splitter = ThinkingSplitter(thinking=True)
    stream_pieces(streamer, splitter, [tokenizer.eos_token], lambda kind, text: pieces.append((kind, text)))
    assert (splitter.reasoning, splitter.answer) == ("Let me add.\n2 + 3 = 5.", "The answer is 5.")
    assert len(pieces) > 2 and {kind for kind, _ in pieces} == {"thinking", "answer"}
    assert not any(tokenizer.eos_token in text for _, text in pieces)


def test_session_streams_and_keeps_the_conversation(tiny_model_dir: Path) -> None:
    import torch

    from ring_trl.chat.loading import load_model, load_tokenizer, resolve_source
    from ring_trl.chat.session import ChatSession, GenerationSettings

    source = resolve_source(str(tiny_model_dir))
    session = ChatSession(
        load_model(source, "cpu"), load_tokenizer(source), GenerationSettings(max_new_tokens=24, greedy=True)
    )
    torch.manual_seed(0)
    pieces: list[tuple[str, str]] = []
    first = session.reply("What is 2 + 3?", lambda kind, text: pieces.append((kind, text)))
    assert 0 < first.new_tokens <= 24 and not first.interrupted
    assert len(pieces) > 1, "the reply must arrive in several pieces, not at the end"
    assert all(
        kind == "thinking" for kind, _ in pieces
    )  # the hub prompt opens <think>; a random model never closes it
    second = session.reply("And 4 * 5?", lambda kind, text: None)
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
    assert session.messages[1]["content"] == assistant_content(first.reasoning, first.answer)
    assert second.new_tokens > 0
    session.reset()
    assert session.messages == []


def test_missing_model_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(main, [str(tmp_path / "Ring-mini-2.0"), "--prompt", "hi"], prog=PROG) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err and "huggingface-cli download" in err


def test_folder_without_tokenizer_files_is_refused_before_loading(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "no-tokenizer")
    (folder / "tokenizer.json").unlink()
    assert run_cli(main, [str(folder), "--prompt", "hi"], prog=PROG) == 2
    assert "tokenizer.json" in capsys.readouterr().err


def _chat(
    args: list[str], stdin: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> str:
    """The CLI in this process (the README test runs it as a fresh process, offline by itself)."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert run_cli(main, args, prog=PROG) == 0, capsys.readouterr().err[-2000:]
    return capsys.readouterr().out


def test_cli_interactive_turns_reset_and_exit(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _chat(
        [str(tiny_model_dir), "--max-new-tokens", "6", "--seed", "0"],
        "Hi\n/reset\nWhat is 1 + 1?\n/exit\nnever read\n",
        capsys,
        monkeypatch,
    )
    assert out.count("[thinking]") == 2 and "(new conversation)" in out and "\x1b[" not in out


def test_cli_talks_to_a_lora_adapter_folder_on_its_base(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, trust_remote_code=True)
    adapter = tmp_path / "lora"
    get_peft_model(base, LoraConfig(r=4, target_modules=["query_key_value"])).save_pretrained(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tiny_model_dir
    )
    args = [str(adapter), "--prompt", "Hi", "--prompt", "More?", "--max-new-tokens", "4", "--greedy"]
    out = _chat(args, "", capsys, monkeypatch)  # EOF on stdin: scripted turns never read it
    assert out.count("you> ") == 2 and out.count("[thinking]") == 2
