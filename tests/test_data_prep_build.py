"""Whole builds on crafted inputs: filters, dedup, decontamination, mixing, atomic outputs, CLI exit codes."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep import errors as E
from data_prep.cli import main
from data_prep.config import SourceConfig
from data_prep.outputs import is_complete
from data_prep.pipeline import Build
from tests.data_prep_builds import run_build

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data_prep" / "samples"

BASE_Q = (
    "A train leaves the station at nine in the morning travelling at sixty kilometres per hour towards a "
    "city that is three hundred kilometres away. A second train leaves the city at ten travelling towards "
    "the station at ninety kilometres per hour. At what time do the two trains meet each other on the line?"
)
BENCH = "Let a and b be positive real numbers such that a plus b equals ten. Find the maximum of a times b."


def _row(prompt: str, answer: str = "The answer is 12.", reasoning: str = "Some careful thinking.") -> dict:
    return {"prompt": prompt, "reasoning": reasoning, "answer": answer}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _build(tmp_path: Path, inputs: list[SourceConfig], kind: str = "sft", **overrides) -> dict:
    return run_build(inputs, tmp_path / "out", kind, **{"verify_answers": False, **overrides})


def _rows(tmp_path: Path, name: str = "t.jsonl") -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "out" / name).read_text().splitlines()]


def _rejects(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "out" / "t.rejects.jsonl").read_text().splitlines()]


# --- filters -------------------------------------------------------------------------------------------


def test_exact_and_near_duplicates(tmp_path: Path) -> None:
    rows = [
        _row(BASE_Q),
        _row(BASE_Q.upper().replace(",", " ,")),  # same text after normalisation
        _row(BASE_Q.replace("second train", "second bus")),  # one word changed
        _row("What is the capital city of Australia, and when was it founded as the capital?"),
    ]
    src = _write_jsonl(tmp_path / "dups.jsonl", rows)
    report = _build(tmp_path, [SourceConfig(str(src), "simple")], near_dedup_threshold=0.8)
    assert report["per_filter"] == {E.DUPLICATE_EXACT: 1, E.DUPLICATE_NEAR: 1}
    rejects = {r["line"]: r["reason"] for r in _rejects(tmp_path)}
    assert rejects == {2: E.DUPLICATE_EXACT, 3: E.DUPLICATE_NEAR}
    # a stricter threshold keeps the near-copy
    report = _build(tmp_path, [SourceConfig(str(src), "simple")], near_dedup_threshold=0.97)
    assert report["per_filter"] == {E.DUPLICATE_EXACT: 1}


def test_decontamination_prompt_and_optional_answer(tmp_path: Path) -> None:
    bench = _write_jsonl(tmp_path / "bench.jsonl", [{"problem": BENCH, "answer": "25"}])
    words = BENCH.split()
    rows = [
        _row("Here is a task. " + " ".join(words[2:10]) + " and more."),  # shares 8 words in a row
        _row("Only seven shared words: " + " ".join(words[2:9]) + " then different ending."),
        _row("A clean prompt about trains and stations.", answer=BENCH),  # contamination only in the answer
    ]
    src = _write_jsonl(tmp_path / "c.jsonl", rows)
    report = _build(tmp_path, [SourceConfig(str(src), "simple")], benchmarks=[str(bench)])
    assert report["per_filter"] == {E.CONTAMINATED: 1}
    assert _rejects(tmp_path)[0]["line"] == 1
    report = _build(
        tmp_path, [SourceConfig(str(src), "simple")], benchmarks=[str(bench)], decontaminate_answer=True
    )
    assert report["per_filter"] == {E.CONTAMINATED: 2}


def test_answer_must_match_reference_with_math_verify(tmp_path: Path) -> None:
    rows = [
        {
            **_row("What is 1/2 as a decimal?", answer="It is $\\boxed{0.5}$."),
            "reference_answer": "\\frac{1}{2}",
        },
        {**_row("What is 3 times 4?", answer="So $\\boxed{13}$."), "reference_answer": "12"},
    ]
    src = _write_jsonl(tmp_path / "v.jsonl", rows)
    report = _build(tmp_path, [SourceConfig(str(src), "simple")], verify_answers=True)
    assert report["per_filter"] == {E.ANSWER_MISMATCH: 1}
    assert _rejects(tmp_path)[0]["line"] == 2


def test_length_filter_drops_never_truncates(tmp_path: Path, tiny_model_dir: Path) -> None:
    # long enough to exceed 512 tokens, short enough that only tokenizing can tell (no size pre-check)
    long_reasoning = " ".join(f"step {i} add the numbers again" for i in range(150))
    rows = [_row("Short question one?"), _row("Long question?", reasoning=long_reasoning)]
    src = _write_jsonl(tmp_path / "len.jsonl", rows)
    report = _build(
        tmp_path, [SourceConfig(str(src), "simple")], cutoff_len=512, tokenizer=str(tiny_model_dir)
    )
    assert report["per_filter"] == {E.TOO_LONG: 1}
    assert report["token_lengths"]["share_over_cutoff"] == 0.5
    assert report["token_lengths"]["measured"]["max"] > 512
    kept = _rows(tmp_path)
    assert (
        kept[0]["messages"][-1]["content"] == "<think>\nSome careful thinking.\n</think>\n\nThe answer is 12."
    )
    assert (tmp_path / "out" / "t.lengths.png").stat().st_size > 1000


# --- input containers ----------------------------------------------------------------------------------


def test_parquet_arrow_folder_and_gzip_inputs_match_jsonl(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_row(f"Question number {i} about trains?") for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    shards = tmp_path / "shards"
    shards.mkdir()
    _write_jsonl(shards / "a.jsonl", rows[:3])
    _write_jsonl(shards / "b.jsonl", rows[3:])
    with gzip.open(tmp_path / "rows.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    expected = [
        r["messages"]
        for r in (_build(tmp_path, [SourceConfig(str(shards), "simple")], shuffle=False) and _rows(tmp_path))
    ]
    assert len(expected) == 6
    for path in ("rows.parquet", "saved", "rows.jsonl.gz"):
        _build(tmp_path, [SourceConfig(str(tmp_path / path), "auto")], shuffle=False)
        assert [r["messages"] for r in _rows(tmp_path)] == expected, path


# --- mixing --------------------------------------------------------------------------------------------


def test_mixing_caps_weights_split_and_seed(tmp_path: Path) -> None:
    a = _write_jsonl(tmp_path / "a.jsonl", [_row(f"Alpha question {i} about apples?") for i in range(20)])
    b = _write_jsonl(tmp_path / "b.jsonl", [_row(f"Beta question {i} about bananas?") for i in range(10)])
    sources = [SourceConfig(str(a), "simple", max_rows=8), SourceConfig(str(b), "simple", weight=0.5)]
    report = _build(tmp_path, sources, val_size=4, seed=7)
    first = _rows(tmp_path) + _rows(tmp_path, "t_val.jsonl")
    per = report["per_source"]
    assert per["a"]["selected_train"] + per["a"]["selected_val"] == 8
    b_train = per["b"]["selected_train"]
    assert b_train == round((10 - per["b"]["selected_val"]) * 0.5)
    assert report["outputs"]["val_rows"] == 4
    assert not {r["id"] for r in _rows(tmp_path)} & {r["id"] for r in _rows(tmp_path, "t_val.jsonl")}
    _build(tmp_path, sources, val_size=4, seed=7)
    assert _rows(tmp_path) + _rows(tmp_path, "t_val.jsonl") == first  # same seed, same dataset
    _build(tmp_path, sources, val_size=4, seed=8)
    assert _rows(tmp_path) + _rows(tmp_path, "t_val.jsonl") != first


def test_worker_processes_give_the_same_dataset(tmp_path: Path) -> None:
    sources = [SourceConfig(str(SAMPLES / "openr1_math.jsonl"), "openr1")]
    inline = _build(tmp_path, sources, benchmarks=[str(SAMPLES / "benchmark.jsonl")], batch_size=3)
    rows_inline = _rows(tmp_path)
    pooled = _build(tmp_path, sources, benchmarks=[str(SAMPLES / "benchmark.jsonl")], batch_size=3, workers=2)
    assert _rows(tmp_path) == rows_inline
    assert pooled["per_filter"] == inline["per_filter"]


# --- outputs -------------------------------------------------------------------------------------------


def test_dataset_info_merge_keeps_other_entries(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    other = {"someone_else": {"file_name": "x.json", "formatting": "alpaca"}}
    (out / "dataset_info.json").write_text(json.dumps(other))
    src = _write_jsonl(tmp_path / "s.jsonl", [_row("One question?"), _row("Two question?")])
    _build(tmp_path, [SourceConfig(str(src), "simple")], val_size=1)
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["someone_else"] == other["someone_else"]
    assert info["t"]["formatting"] == "sharegpt" and info["t"]["columns"] == {"messages": "messages"}
    assert info["t_val"]["file_name"] == "t_val.jsonl"
    (out / "dataset_info.json").write_text("{not json")
    with pytest.raises(E.DataPrepError, match="not valid JSON"):
        _build(tmp_path, [SourceConfig(str(src), "simple")])
    assert (out / "dataset_info.json").read_text() == "{not json"


def test_crash_while_writing_leaves_the_previous_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _write_jsonl(tmp_path / "s.jsonl", [_row(f"Question {i} here?") for i in range(5)])
    _build(tmp_path, [SourceConfig(str(src), "simple")])
    out = tmp_path / "out"
    before = (out / "t.jsonl").read_bytes()
    assert is_complete(out, "t")

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash")

    # crash while writing: the published dataset is untouched and no temp folder is left behind
    monkeypatch.setattr(Build, "_write_rows", boom)
    with pytest.raises(RuntimeError):
        _build(tmp_path, [SourceConfig(str(src), "simple")], seed=1)
    assert (out / "t.jsonl").read_bytes() == before and is_complete(out, "t")
    assert not [p for p in out.iterdir() if ".data_prep-tmp-" in p.name]


# --- CLI and bad input ---------------------------------------------------------------------------------


def test_cli_exit_codes_and_bad_input_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = _write_jsonl(tmp_path / "clean.jsonl", [_row("Good question?")])
    common = [
        "--output-dir",
        str(tmp_path / "out"),
        "--name",
        "t",
        "--cutoff-len",
        "0",
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(["build-sft", "--input", str(clean), *common]) == E.EXIT_OK
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(
        b'{"prompt": "ok?", "reasoning": "r", "answer": "a"}\n{"prompt": "x", \n{"reasoning": "r"}\n'
    )
    capsys.readouterr()
    assert main(["build-sft", "--input", str(bad), *common]) == E.EXIT_OK  # published; rejects listed
    summary = capsys.readouterr().out
    assert "rejected malformed_row: 1" in summary and str(tmp_path / "out" / "t.rejects.jsonl") in summary
    rejects = _rejects(tmp_path)
    assert [(r["reason"], r["file"], r["line"]) for r in rejects] == [
        (E.MALFORMED_ROW, str(bad), 2),
        (E.MISSING_FIELD, str(bad), 3),
    ]
    assert rejects[0]["row"] == '{"prompt": "x", '  # the unparseable line itself is kept for the user
    assert main(["build-sft", "--input", str(bad), "--fail-on-rejects", *common]) == E.EXIT_REJECTED
    capsys.readouterr()
    assert main(["build-sft", "--input", str(bad), "--strict", *common]) == E.EXIT_FATAL
    assert f"{bad}:line 2: malformed_row" in capsys.readouterr().err
    assert main(["build-sft", "--input", str(bad), "--format", "nope", *common]) == E.EXIT_USAGE
    assert "unknown format 'nope'" in capsys.readouterr().err
    assert main(["build-sft", "--input", str(tmp_path / "missing.jsonl"), *common]) == E.EXIT_FATAL
    assert "missing.jsonl: input does not exist" in capsys.readouterr().err
    assert (
        main(["build-sft", "--input", str(clean), "--tokenizer", str(tmp_path / "none"), "--name", "u"])
        == E.EXIT_USAGE
    )
    rlvr_config = str(REPO / "data_prep" / "configs" / "demo_rlvr.yaml")
    capsys.readouterr()
    assert main(["build-sft", "--config", rlvr_config, *common]) == E.EXIT_USAGE  # the config says kind: rlvr
    assert "for build-rlvr, not build-sft" in capsys.readouterr().err


def test_module_entry_point_runs_the_demo_rlvr_config(tmp_path: Path) -> None:
    config = REPO / "data_prep" / "configs" / "demo_rlvr.yaml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep",
            "build-rlvr",
            "--config",
            str(config),
            "--output-dir",
            str(tmp_path),
            "--cutoff-len",
            "0",
            "--no-progress",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == E.EXIT_OK, proc.stderr  # rows are rejected on purpose: still exit 0
    assert (tmp_path / "demo_rlvr.rejects.jsonl").read_text().count("\n") >= 5
    rows = [json.loads(line) for line in (tmp_path / "demo_rlvr.jsonl").read_text().splitlines()]
    assert len(rows) > 30
    for row in rows:
        assert set(row) <= {"id", "source", "prompt", "answer", "task", "tests"}
        assert (
            isinstance(row["id"], str) and isinstance(row["answer"], str) and row["task"] in ("math", "code")
        )
        assert row["prompt"][-1]["role"] == "user" and all(
            set(m) == {"role", "content"} for m in row["prompt"]
        )
    assert (
        json.loads((tmp_path / "dataset_info.json").read_text())["demo_rlvr"]["file_name"]
        == "demo_rlvr.jsonl"
    )
    # the GRPO trainer's own loader accepts every row (the contract between the two stages)
    grpo_data = pytest.importorskip("ring_trl.grpo.data")
    assert len(grpo_data.load_prompt_dataset(tmp_path / "demo_rlvr.jsonl")) == len(rows)


def test_llamafactory_reads_the_sft_output(tmp_path: Path) -> None:
    from llamafactory.data.converter import SharegptDatasetConverter
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import DataArguments

    src = SAMPLES / "openai_messages.jsonl"
    _build(tmp_path, [SourceConfig(str(src), "messages")], shuffle=False)
    attr = get_dataset_list(["t"], str(tmp_path / "out"))[0]
    converter = SharegptDatasetConverter(
        dataset_attr=attr, data_args=DataArguments(dataset_dir=str(tmp_path / "out"))
    )
    for row in _rows(tmp_path):
        converted = converter(row)
        assert converted["_response"] == [{"role": "assistant", "content": row["messages"][-1]["content"]}]
        assert converted["_response"][0]["content"].startswith("<think>\n")


def test_rlvr_rejects_unusable_references(tmp_path: Path) -> None:
    rows = [
        {"prompt": "What is 6 * 7?", "answer": "42"},
        {
            "prompt": "Prove that there are infinitely many primes.",
            "answer": "see the proof above, by contradiction",
        },
        {"prompt": "Name a prime bigger than 10?"},
    ]
    src = _write_jsonl(tmp_path / "r.jsonl", rows)
    report = _build(tmp_path, [SourceConfig(str(src), "simple")], kind="rlvr", verify_answers=True)
    assert report["per_filter"] == {E.MISSING_REFERENCE: 1, E.UNVERIFIABLE_REFERENCE: 1}
    assert [r["answer"] for r in _rows(tmp_path)] == ["42"]


def test_json_array_streams_across_chunks_and_reports_bad_elements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from data_prep import sources

    monkeypatch.setattr(sources, "_JSON_CHUNK_CHARS", 64)  # force many chunk boundaries inside rows
    rows = [_row(f"Question {i} " + "word " * i) for i in range(30)]
    good = tmp_path / "good.json"
    good.write_text(json.dumps(rows, indent=1))
    assert [r.data for r in sources.iter_rows(good)] == rows
    bad = tmp_path / "bad.json"
    bad.write_text('[\n{"prompt": "a"},\n{"prompt": oops}\n]')
    first, error = list(sources.iter_rows(bad))  # the element before the break is kept, then a file error
    assert first.data == {"prompt": "a"}
    assert error.is_file_error and error.position == 2
    assert "line 3: invalid JSON array element" in error.error.detail


def test_limit_reads_only_the_first_rows(tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "l.jsonl", [_row(f"Question {i} here?") for i in range(50)])
    report = _build(tmp_path, [SourceConfig(str(src), "simple")], limit=7)
    assert report["rows_read"] == 7 and report["outputs"]["train_rows"] == 7
