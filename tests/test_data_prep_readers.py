"""Each sample schema converts to the exact canonical record (`<think>\\n…\\n</think>\\n\\n…`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep import errors as E
from data_prep.formats import detect_format, resolve_format
from data_prep.rows import Candidate, Rejected, RowProcessor, RowSettings
from data_prep.sources import iter_rows

SAMPLES = Path(__file__).resolve().parents[1] / "data_prep" / "samples"


def _settings(kind: str = "sft") -> RowSettings:
    return RowSettings(
        kind=kind,
        tokenizer=None,
        cutoff_len=0,
        verify_answers=False,
        verify_timeout_s=5,
        benchmark_texts=[],
        decontam_ngram=8,
        decontaminate_answer=False,
        exact_dedup=True,
        near_dedup=False,
        minhash_num_perm=64,
        minhash_ngram=3,
        dedup_on="prompt",
        default_task="math",
    )


def _convert(filename: str, fmt: str, kind: str = "sft") -> list[Candidate | Rejected]:
    rows = list(iter_rows(SAMPLES / filename))
    return RowProcessor(_settings(kind)).process(Path(filename).stem, resolve_format(fmt), rows)


def _kept(results: list[Candidate | Rejected]) -> list[dict]:
    return [json.loads(r.line) for r in results if isinstance(r, Candidate)]


def _reasons(results: list[Candidate | Rejected]) -> list[str]:
    return [r.reason for r in results if isinstance(r, Rejected)]


def test_openr1_picks_first_correct_generation() -> None:
    results = _convert("openr1_math.jsonl", "openr1-math")
    kept = {r["id"]: r for r in _kept(results)}
    assert kept["openr1_math/or1-1"] == {
        "id": "openr1_math/or1-1",
        "source": "openr1_math",
        "messages": [
            {"role": "user", "content": "What is 2 + 3?"},
            {
                "role": "assistant",
                "content": "<think>\nI add 2 and 3 to get 5.\n</think>\n\nThe answer is $\\boxed{5}$.",
            },
        ],
        "reference_answer": "5",
    }
    # the first generation is marked wrong, the second right
    assert kept["openr1_math/or1-2"]["messages"][-1]["content"] == (
        "<think>\n6 times 7 is 42.\n</think>\n\nSo the product is $\\boxed{42}$."
    )
    reasons = _reasons(results)
    assert reasons.count(E.ANSWER_MISMATCH) == 1  # no generation marked correct
    assert E.UNCLOSED_REASONING in reasons and E.MISSING_FIELD in reasons and E.MALFORMED_ROW in reasons


def test_openthoughts_drops_delimiter_system_prompt() -> None:
    results = _convert("openthoughts.jsonl", "openthoughts")
    assert _kept(results)[0]["messages"] == [
        {"role": "user", "content": "Return the number of vowels in the word banana."},
        {
            "role": "assistant",
            "content": "<think>\nb-a-n-a-n-a has a, a, a: three vowels.\n</think>\n\nThere are 3 vowels.",
        },
    ]
    assert _reasons(results) == [E.MISSING_REASONING, E.UNCLOSED_ANSWER, E.EMPTY_ANSWER]


def test_s1k_trajectory_and_attempt() -> None:
    results = _convert("s1k.jsonl", "s1k")
    record = _kept(results)[0]
    assert record["messages"][-1]["content"] == (
        "<think>\nHexa means six, so a hexagon has six sides.\n</think>\n\nA hexagon has $\\boxed{6}$ sides."
    )
    assert record["reference_answer"] == "6"
    assert _reasons(results) == [E.EMPTY_ANSWER]


def test_limo_json_array() -> None:
    results = _convert("limo.json", "limo")
    assert _kept(results)[0]["messages"][-1]["content"] == (
        "<think>\n12 squared is 12*12 = 144.\n</think>\n\nThe final answer is $\\boxed{144}$."
    )
    assert _reasons(results) == [E.MISSING_FIELD]


def test_am_strips_answer_tags_and_reads_reference() -> None:
    results = _convert("am_distilled.jsonl", "am-distilled")
    record = _kept(results)[0]
    assert record["messages"] == [
        {"role": "user", "content": "What is 100 divided by 4?"},
        {"role": "assistant", "content": "<think>\n100 / 4 = 25.\n</think>\n\nThe result is $\\boxed{25}$."},
    ]
    assert record["reference_answer"] == "25"
    assert _reasons(results) == [E.UNCLOSED_ANSWER, E.MALFORMED_ROW]  # the last line is not UTF-8


def test_nemotron_reasoning_switch_and_llama_string_input() -> None:
    results = _convert("nemotron.jsonl", "nemotron")
    kept = _kept(results)
    assert kept[0]["messages"] == [
        {"role": "user", "content": "Write the word hello in capital letters."},
        {"role": "assistant", "content": "<think>\nCapital letters of hello: HELLO.\n</think>\n\nHELLO"},
    ]
    assert kept[1]["messages"][0] == {"role": "user", "content": "What is the opposite of up?"}
    assert _reasons(results) == [E.MISSING_REASONING]  # reasoning: off


def test_openai_messages_system_reasoning_content_and_multiturn() -> None:
    kept = {r["id"]: r for r in _kept(_convert("openai_messages.jsonl", "openai"))}
    assert kept["openai_messages/m1"]["messages"][0] == {
        "role": "system",
        "content": "You are a helpful assistant.",
    }
    assert kept["openai_messages/m2"]["messages"][-1]["content"] == (
        "<think>\n7 + 8 = 15.\n</think>\n\nThe answer is $\\boxed{15}$."
    )
    multi = kept["openai_messages/m3"]["messages"]
    assert multi[1] == {
        "role": "assistant",
        "content": "Hello! I am an assistant.",
    }  # earlier reasoning dropped
    assert multi[-1]["content"] == "<think>\nList abilities.\n</think>\n\nI can answer questions."


def test_sharegpt_and_simple() -> None:
    share = _kept(_convert("sharegpt.jsonl", "sharegpt"))
    assert share[0]["messages"] == [
        {"role": "user", "content": "List the first three even numbers."},
        {"role": "assistant", "content": "<think>\nEven numbers start at 2: 2, 4, 6.\n</think>\n\n2, 4, 6"},
    ]
    results = _convert("simple.jsonl", "simple")
    assert (
        _kept(results)[0]["messages"][-1]["content"] == "<think>\nc-a-t reversed is t-a-c.\n</think>\n\ntac"
    )
    assert _reasons(results) == [E.EMPTY_ANSWER]


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("openr1_math.jsonl", "openr1"),
        ("openthoughts.jsonl", "thought"),
        ("s1k.jsonl", "s1k"),
        ("limo.json", "limo"),
        ("am_distilled.jsonl", "am"),
        ("nemotron.jsonl", "nemotron"),
        ("openai_messages.jsonl", "messages"),
        ("sharegpt.jsonl", "sharegpt"),
        ("simple.jsonl", "simple"),
    ],
)
def test_detect_format(filename: str, expected: str) -> None:
    first = next(r for r in iter_rows(SAMPLES / filename) if r.data is not None)
    assert detect_format(first.data) == expected


def test_rlvr_rows_follow_the_contract() -> None:
    results = _convert("rlvr_math.jsonl", "simple", kind="rlvr")
    kept = _kept(results)
    assert kept[0] == {
        "id": "rlvr_math/arith-0",
        "source": "rlvr_math",
        "prompt": [
            {
                "role": "user",
                "content": json.loads((SAMPLES / "rlvr_math.jsonl").read_text().splitlines()[0])["prompt"],
            }
        ],
        "answer": json.loads((SAMPLES / "rlvr_math.jsonl").read_text().splitlines()[0])["answer"],
        "task": "math",
    }
    code = next(r for r in kept if r["task"] == "code")
    assert code["tests"] == [{"input": "1 2\n", "output": "3\n"}, {"input": "10 -4\n", "output": "6\n"}]
    assert _reasons(results).count(E.MISSING_REFERENCE) == 2  # no answer; code without tests
