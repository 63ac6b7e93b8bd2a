"""Damaged and hostile inputs: BOMs, deep nesting, broken containers, one-object JSON, think-tag abuse,
invisible answers and rows too large to tokenize. Each case used to lose data, crash or leak into training."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from data_prep import errors as E
from data_prep.config import SourceConfig
from data_prep.rows import Candidate, Rejected, RowProcessor, RowSettings
from data_prep.sources import MAX_JSON_DEPTH, RawRow, iter_rows
from tests.data_prep_builds import run_build

BOM = b"\xef\xbb\xbf"


def _line(prompt: str, reasoning: str = "Think it through.", answer: str = "It is 4.") -> str:
    return json.dumps({"prompt": prompt, "reasoning": reasoning, "answer": answer}) + "\n"


def _build(tmp_path: Path, inputs: list[SourceConfig], kind: str = "sft", **overrides) -> dict:
    return run_build(
        inputs, tmp_path / "out", kind, **{"verify_answers": False, "near_dedup": False, **overrides}
    )


def _kept(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "out" / "t.jsonl").read_text().splitlines()]


def _rejects(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "out" / "t.rejects.jsonl").read_text().splitlines()]


def _settings(**changes) -> RowSettings:
    base = {
        "kind": "sft",
        "tokenizer": None,
        "cutoff_len": 0,
        "verify_answers": False,
        "verify_timeout_s": 5,
        "benchmark_texts": [],
        "decontam_ngram": 8,
        "decontaminate_answer": False,
        "exact_dedup": False,
        "near_dedup": False,
        "minhash_num_perm": 64,
        "minhash_ngram": 3,
        "dedup_on": "prompt",
        "default_task": "math",
    }
    return RowSettings(**{**base, **changes})


def _process(rows: list[dict], fmt: str = "simple", **settings) -> list[Candidate | Rejected]:
    raws = [RawRow("mem.jsonl", i, "line", row) for i, row in enumerate(rows, start=1)]
    return RowProcessor(_settings(**settings)).process("mem", fmt, raws)


# --- containers ----------------------------------------------------------------------------------------


def test_utf8_bom_costs_no_row(tmp_path: Path) -> None:
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(BOM + (_line("First?") + _line("Second?")).encode())
    array = tmp_path / "bom.json"
    array.write_bytes(BOM + json.dumps([{"prompt": "A?"}, {"prompt": "B?"}]).encode())
    document = tmp_path / "bom_doc.json"
    document.write_bytes(BOM + json.dumps({"data": [{"prompt": "C?"}]}).encode())
    assert [r.data["prompt"] for r in iter_rows(jsonl)] == ["First?", "Second?"]
    assert [r.data["prompt"] for r in iter_rows(array)] == ["A?", "B?"]
    assert [r.data["prompt"] for r in iter_rows(document)] == ["C?"]


def test_deep_nesting_is_a_row_error_not_a_crash(tmp_path: Path) -> None:
    too_deep_for_python = '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}"
    over_our_limit = (
        '{"prompt": "x", "meta": ' + "[" * (MAX_JSON_DEPTH + 5) + "]" * (MAX_JSON_DEPTH + 5) + "}"
    )
    lines = [_line("Before?"), too_deep_for_python + "\n", over_our_limit + "\n", _line("After?")]
    src = tmp_path / "deep.jsonl"
    src.write_text("".join(lines))
    report = _build(tmp_path, [SourceConfig(str(src), "simple")])
    assert report["per_filter"] == {E.MALFORMED_ROW: 2}
    assert sorted(r["messages"][0]["content"] for r in _kept(tmp_path)) == ["After?", "Before?"]
    assert [(r["line"], "nested deeper" in r["detail"]) for r in _rejects(tmp_path)] == [(2, True), (3, True)]
    # the same inside a JSON array: the deep element is rejected, the next one still read
    array = tmp_path / "deep.json"
    array.write_text("[" + too_deep_for_python + ', {"prompt": "Next?"}]')
    rows = list(iter_rows(array))
    assert rows[0].error is not None and rows[0].error.reason == E.MALFORMED_ROW
    assert rows[1].data == {"prompt": "Next?"}


def _gzip_rows(count: int) -> bytes:
    return gzip.compress("".join(_line(f"Question number {i}?") for i in range(count)).encode())


@pytest.mark.parametrize(
    ("name", "damage", "expect"),
    [
        ("cut.jsonl.gz", lambda data: data[: len(data) * 2 // 3], "truncated gzip"),
        ("noise.jsonl.gz", lambda data: data[:40] + bytes(range(256)) * 4 + data[1100:], "corrupt gzip"),
        ("plain.jsonl.gz", lambda data: b"this was never gzipped\n" * 5, "corrupt gzip"),
        ("fake.parquet", lambda data: b"PAR1 but not really a parquet file", "not a readable Parquet"),
    ],
)
def test_damaged_file_is_a_file_error_and_rows_before_it_are_kept(
    tmp_path: Path, name: str, damage, expect: str
) -> None:
    bad = tmp_path / name
    bad.write_bytes(damage(_gzip_rows(400)))
    good = tmp_path / "good.jsonl"
    good.write_text(_line("A question from the good file?"))
    report = _build(tmp_path, [SourceConfig(str(bad), "simple"), SourceConfig(str(good), "simple")])
    [error] = report["file_errors"]
    assert error["file"] == str(bad) and expect in error["detail"]
    file_rejects = [r for r in _rejects(tmp_path) if r["reason"] == E.FILE_ERROR]
    assert len(file_rejects) == 1 and file_rejects[0]["file"] == str(bad)
    kept = {r["messages"][0]["content"] for r in _kept(tmp_path)}
    assert "A question from the good file?" in kept  # the next input is still read
    read_before_error = report["per_source"][bad.name.split(".")[0]]["read"]
    assert read_before_error < 400
    if "truncated" in expect:  # every complete row before the cut is in the dataset
        assert read_before_error > 100
        assert sum(k.startswith("Question number") for k in kept) >= read_before_error - 1
    assert report["rows_read"] == read_before_error + 1  # the file error is not counted as a row


def test_strict_stops_at_a_file_error_and_publishes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "cut.jsonl.gz"
    data = _gzip_rows(300)
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(E.DataPrepError, match=r"cut\.jsonl\.gz:line \d+: file_error: .*truncated gzip"):
        _build(tmp_path, [SourceConfig(str(bad), "simple")], strict=True)
    assert not (tmp_path / "out" / "t.jsonl").exists()


def test_a_json_file_holding_one_object_is_one_row(tmp_path: Path) -> None:
    one = {
        "prompt": "Add the numbers of each test.",
        "task": "code",
        "tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "2 2\n", "output": "4\n"}],
    }
    src = tmp_path / "one.json"
    src.write_text(json.dumps(one))
    assert [r.data for r in iter_rows(src)] == [one]
    wrapper = tmp_path / "wrapped.json"
    wrapper.write_text(json.dumps({"version": 2, "data": [{"prompt": "a?"}, {"prompt": "b?"}]}))
    assert [r.data for r in iter_rows(wrapper)] == [{"prompt": "a?"}, {"prompt": "b?"}]


# --- reasoning blocks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("<think>outer <think>inner</think> more</think>The answer is 4.", E.NESTED_REASONING),
        ("<think>first try</think>Maybe 5.<think>second try</think>The answer is 4.", E.REPEATED_REASONING),
        ("Lost words</think> then <think>reasoning</think>The answer is 4.", E.STRAY_REASONING_TAG),
        ("<think>reasoning</think>The answer is 4.</think>", E.STRAY_REASONING_TAG),
        ("Preamble that would vanish. <think>reasoning</think>The answer is 4.", E.TEXT_BEFORE_REASONING),
        ("<think>reasoning</think><answer>4</answer> and trailing words", E.MALFORMED_ANSWER),
    ],
)
def test_think_tag_abuse_is_rejected_with_its_own_reason(response: str, reason: str) -> None:
    row = {
        "messages": [
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": response},
        ]
    }
    [result] = _process([row], fmt="messages")
    assert isinstance(result, Rejected) and result.reason == reason, result


def test_think_tags_inside_separate_reasoning_or_answer_fields_are_rejected() -> None:
    results = _process(
        [
            {"prompt": "Q1?", "reasoning": "a <think> b", "answer": "4"},
            {"prompt": "Q2?", "reasoning": "fine", "answer": "4 <think>again</think> 5"},
            {"prompt": "Q3?", "reasoning": "fine", "answer": "4"},
        ]
    )
    assert [getattr(r, "reason", "kept") for r in results] == [
        E.NESTED_REASONING,
        E.REPEATED_REASONING,
        "kept",
    ]


def test_the_ordinary_forms_still_pass() -> None:
    responses = [
        "<think>\nreasoning\n</think>\n\nThe answer is 4.",
        "reasoning without opener</think>The answer is 4.",  # R1: <think> was in the prompt
        "<think>reasoning</think><answer>The answer is 4.</answer>",
    ]
    rows = [
        {"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": text}]}
        for i, text in enumerate(responses)
    ]
    results = _process(rows, fmt="messages")
    assert all(isinstance(r, Candidate) for r in results), results
    assert json.loads(results[2].line)["messages"][-1]["content"].endswith("</think>\n\nThe answer is 4.")


def test_invisible_text_is_empty() -> None:
    zwsp, zwj = "\u200b", "\u200d"
    results = _process(
        [
            {"prompt": "Q1?", "reasoning": "Careful thought.", "answer": f" {zwsp}{zwsp} "},
            {"prompt": "Q2?", "reasoning": f"{zwsp}\n{zwj}", "answer": "4"},
        ]
    )
    assert [r.reason for r in results] == [E.EMPTY_ANSWER, E.MISSING_REASONING]
    rlvr = _process([{"prompt": "What is 2 + 2?", "answer": f"{zwsp}"}], kind="rlvr")
    assert [r.reason for r in rlvr] == [E.MISSING_REFERENCE]


# --- size pre-check ------------------------------------------------------------------------------------


def test_rows_too_large_to_fit_are_dropped_without_tokenizing(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from data_prep.tokens import TokenCounter

    seen: list[int] = []
    original = TokenCounter.count

    def spy(self, texts):  # type: ignore[no-untyped-def]
        seen.extend(len(t) for t in texts)
        return original(self, texts)

    monkeypatch.setattr(TokenCounter, "count", spy)
    huge = "the sum of the numbers " * 200_000  # 4.6 MB: far beyond 256 tokens whatever the tokenizer does
    src = tmp_path / "huge.jsonl"
    src.write_text(_line("A big one?", reasoning=huge) + _line("A small one?"))
    report = _build(
        tmp_path, [SourceConfig(str(src), "simple")], cutoff_len=256, tokenizer=str(tiny_model_dir)
    )
    assert report["per_filter"] == {E.TOO_LONG: 1}
    assert max(seen) < 10_000  # only the small row reached the tokenizer
    [reject] = _rejects(tmp_path)
    assert "not tokenized" in reject["detail"] and reject["row"]["reasoning"] == huge  # kept, not lost
    lengths = report["token_lengths"]
    assert lengths["too_long_without_tokenizing"] == 1 and lengths["share_over_cutoff"] == 0.5


def test_size_bound_never_drops_a_row_that_fits(tiny_model_dir: Path) -> None:
    from data_prep.tokens import TokenCounter

    counter = TokenCounter(tiny_model_dir)
    assert counter.max_token_bytes is not None
    for text in ["aaaa " * 3000, "数学" * 4000, "x" * 20_000, "<think>" * 3000, "\n" * 20_000]:
        actual = counter.count([text])[0]
        bound = counter.min_tokens_if_over(text, 1000)
        assert bound is None or actual >= bound > 1000, (text[:10], actual, bound)


# --- length histogram ----------------------------------------------------------------------------------


def test_one_outlier_does_not_flatten_the_length_histogram(tmp_path: Path) -> None:
    from data_prep.report import histogram_layout, plot_lengths

    bulk = [150 + (i * 37) % 300 for i in range(200)]  # 150..449 tokens
    layout = histogram_layout([*bulk, 13_000], cutoff_len=1024)
    assert layout.overflow == 1 and layout.longest == 13_000
    assert layout.cutoff_in_range and layout.upper < 2000
    assert (layout.counts > 0).sum() >= 15  # the bulk is spread over many bins, not squeezed into one or two
    assert layout.counts.sum() == len(bulk)
    far = histogram_layout([*bulk, 13_000], cutoff_len=32_768)  # a cutoff far beyond the data is annotated
    assert not far.cutoff_in_range and (far.counts > 0).sum() >= 15
    plot_lengths([*bulk, 13_000], 1024, tmp_path / "h.png", "t", unmeasured_over=2)
    assert (tmp_path / "h.png").stat().st_size > 1000


# --- empty results -------------------------------------------------------------------------------------


def test_an_empty_result_is_not_published(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(_line("A fine question?") + _line("Another fine question?"))
    _build(tmp_path, [SourceConfig(str(good), "simple")])
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(E.DataPrepError, match=r"no rows read from .*empty\.jsonl; nothing was published"):
        _build(tmp_path, [SourceConfig(str(empty), "simple")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "no reasoning here"}\n{"nothing": 1}\n')
    with pytest.raises(E.DataPrepError, match=r"all 2 rows were rejected .*first: .*bad\.jsonl:line 1"):
        _build(tmp_path, [SourceConfig(str(bad), "simple")])
    with pytest.raises(E.DataPrepError, match="no training rows: all 2 kept rows went to the validation"):
        _build(tmp_path, [SourceConfig(str(good), "simple")], val_size=5)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # the previous dataset, its manifest and dataset_info.json are untouched
