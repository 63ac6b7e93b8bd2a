"""build-pref: each preference layout to the exact pair record, every pair filter, the thinking policy,
on-policy pairs from samples, the CLI, and LLaMA-Factory reading the output as a ranking dataset."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from data_prep import errors as E
from data_prep.cli import main
from data_prep.config import SourceConfig
from data_prep.pref_formats import detect_pref_format, resolve_pref_format
from data_prep.rows import Candidate, Rejected, RowProcessor, RowSettings
from data_prep.sources import iter_rows
from tests.data_prep_builds import run_build

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data_prep" / "samples"


def _settings(**overrides) -> RowSettings:
    values = dict(
        kind="pref", tokenizer=None, cutoff_len=0, verify_answers=False, verify_timeout_s=5,
        benchmark_texts=[], decontam_ngram=8, decontaminate_answer=False, exact_dedup=True,
        near_dedup=False, minhash_num_perm=64, minhash_ngram=3, dedup_on="pair", default_task="math",
    )  # fmt: skip
    return RowSettings(**{**values, **overrides})


def _convert(filename: str, fmt: str, **settings) -> list[Candidate | Rejected]:
    rows = list(iter_rows(SAMPLES / filename))
    return RowProcessor(_settings(**settings)).process(Path(filename).stem, resolve_pref_format(fmt), rows)


def _kept(results) -> list[dict]:
    return [json.loads(r.line) for r in results if isinstance(r, Candidate)]


def _reasons(results) -> list[tuple[int, str]]:
    return [(r.position, r.reason) for r in results if isinstance(r, Rejected)]


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _build(tmp_path: Path, inputs: list[SourceConfig], **overrides) -> dict:
    return run_build(inputs, tmp_path / "out", "pref", **{"dataset_name": "p", "shuffle": False, **overrides})


def _out_rows(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "out" / "p.jsonl").read_text().splitlines()]


# --- readers: exact pair records -----------------------------------------------------------------------


def test_ultrafeedback_reader() -> None:
    results = _convert("pref_ultrafeedback.jsonl", "ultrafeedback-binarized")
    kept = {r["id"]: r for r in _kept(results)}
    assert kept["pref_ultrafeedback/uf-1"] == {
        "id": "pref_ultrafeedback/uf-1",
        "source": "pref_ultrafeedback",
        "prompt": [_user("Write a haiku about autumn leaves.")],
        "chosen": _assistant(
            "Red leaves drift and fall,\nwhispering to the cold ground:\nthe year lets go now."
        ),
        "rejected": _assistant("Leaves are red. They fall. It is autumn."),
        "score_chosen": 8.5,
        "score_rejected": 4.0,
    }
    assert kept["pref_ultrafeedback/uf-2"]["prompt"] == [
        {"role": "system", "content": "You are a patient math teacher."},
        _user("Explain what a prime number is in one sentence."),
    ]
    # row 3 (a tie) passes without min_score_margin; rows 7 (duplicate) and 8 (benchmark) need the whole build
    assert _reasons(results) == [
        (4, E.IDENTICAL_PAIR),  # "Bonjour!" vs "bonjour": the same words
        (5, E.MALFORMED_ROW),  # the two sides answer different prompts
        (6, E.EMPTY_RESPONSE),
    ]


def test_hh_rlhf_reader_splits_the_shared_transcript() -> None:
    results = _convert("pref_hh.jsonl", "hh-rlhf")
    kept = _kept(results)
    assert kept[0]["prompt"] == [_user("How do I boil an egg?")]
    assert kept[0]["chosen"] == _assistant(
        "Put the egg in boiling water for about nine minutes, then cool it in cold water."
    )
    assert kept[0]["rejected"] == _assistant("Just microwave it in its shell.")
    assert kept[1]["prompt"] == [
        _user("What is the capital of Japan?"),
        _assistant("Tokyo."),
        _user("And its population?"),
    ]
    assert (kept[1]["chosen"]["content"], kept[1]["rejected"]["content"]) == (
        "About 14 million people live in Tokyo proper.",
        "Around 500.",
    )
    assert kept[0]["id"] == "pref_hh/pref_hh.jsonl:1"  # no id in HH rows: file and line
    assert _reasons(results) == [(3, E.EMPTY_RESPONSE), (4, E.MALFORMED_ROW), (5, E.MALFORMED_ROW)]


def test_generic_pairs_reader_rewrites_reasoning_to_ring_layout() -> None:
    results = _convert("pref_pairs.jsonl", "pairs")
    kept = {r["id"]: r for r in _kept(results)}
    assert kept["pref_pairs/p-1"] == {
        "id": "pref_pairs/p-1",
        "source": "pref_pairs",
        "prompt": [_user("What is 7 + 5?")],
        "chosen": _assistant("<think>\n7 + 5: 7 + 3 = 10, plus 2 more is 12.\n</think>\n\nThe answer is 12."),
        "rejected": _assistant("<think>\n7 + 5 looks like 13.\n</think>\n\nThe answer is 13."),
        "score_chosen": 1.0,
        "score_rejected": 0.0,
    }
    assert kept["pref_pairs/p-2"]["prompt"] == [
        {"role": "system", "content": "Answer briefly."},
        _user("What is 9 * 3?"),
    ]
    assert kept["pref_pairs/p-3"]["rejected"] == _assistant("Yes.")  # no reasoning: an answer alone
    assert _reasons(results) == [(4, E.UNCLOSED_REASONING), (6, E.EMPTY_ANSWER)]  # p-5 is only too long


def test_llamafactory_ranking_reader_alpaca_and_sharegpt() -> None:
    results = _convert("pref_llamafactory.json", "llamafactory")
    kept = _kept(results)
    assert kept[0]["prompt"] == [_user("Translate to German.\nGood morning")]
    assert (kept[0]["chosen"], kept[0]["rejected"]) == (_assistant("Guten Morgen"), _assistant("Gute Nacht"))
    assert kept[1]["prompt"] == [
        {"role": "system", "content": "You are a careful assistant."},
        _user("What is 3 + 3?"),
        _assistant("6"),
        _user("And what is 6 + 6?"),
    ]
    assert kept[1]["chosen"] == _assistant("<think>\n6 + 6 = 12.\n</think>\n\n12")
    assert kept[2]["prompt"] == [_user("Name a mammal that can fly.")]
    assert (kept[2]["chosen"], kept[2]["rejected"]) == (_assistant("The bat."), _assistant("The penguin."))
    assert _reasons(results) == [(4, E.MISSING_FIELD)]


def test_every_sample_file_detects_its_layout() -> None:
    expected = {
        "pref_ultrafeedback.jsonl": "ultrafeedback",
        "pref_hh.jsonl": "hh",
        "pref_pairs.jsonl": "pairs",
        "pref_llamafactory.json": "llamafactory",
        "pref_eval_samples.jsonl": "samples",
    }
    for name, fmt in expected.items():
        first = next(iter_rows(SAMPLES / name)).data
        assert detect_pref_format(first) == fmt, name
    assert detect_pref_format({"prompt": "p", "reasoning": "r", "answer": "a"}) is None


# --- filters and the thinking policy -------------------------------------------------------------------


def test_thinking_policy_keep_strip_require() -> None:
    keep = {r["id"]: r for r in _kept(_convert("pref_pairs.jsonl", "pairs", thinking="keep"))}
    strip = {r["id"]: r for r in _kept(_convert("pref_pairs.jsonl", "pairs", thinking="strip"))}
    assert (
        keep["pref_pairs/p-2"]["chosen"]["content"] == "<think>\nThree nines: 9 + 9 + 9 = 27.\n</think>\n\n27"
    )
    assert strip["pref_pairs/p-2"]["chosen"]["content"] == "27"
    assert strip["pref_pairs/p-2"]["rejected"]["content"] == "93"
    required = _convert("pref_pairs.jsonl", "pairs", thinking="require")
    assert "pref_pairs/p-3" not in {r["id"] for r in _kept(required)}
    assert (3, E.MISSING_REASONING) in _reasons(required)
    detail = next(r.detail for r in required if isinstance(r, Rejected) and r.position == 3)
    assert detail == "rejected has no reasoning block (--thinking require)"


def test_score_margin_filter_only_applies_to_scored_pairs(tmp_path: Path) -> None:
    rows = [
        {"prompt": "a?", "chosen": "yes", "rejected": "no", "score_chosen": 7.0, "score_rejected": 6.5},
        {"prompt": "b?", "chosen": "yes", "rejected": "no", "score_chosen": 9.0, "score_rejected": 2.0},
        {"prompt": "c?", "chosen": "yes", "rejected": "no"},  # no scores: nothing to check
        {"prompt": "d?", "chosen": "yes", "rejected": "no", "score_chosen": "high", "score_rejected": 1},
    ]
    src = _write_jsonl(tmp_path / "m.jsonl", rows)
    report = _build(tmp_path, [SourceConfig(str(src), "pairs")], min_score_margin=1.0)
    assert report["per_filter"] == {E.LOW_SCORE_MARGIN: 1, E.MALFORMED_ROW: 1}
    assert [r["prompt"][0]["content"] for r in _out_rows(tmp_path)] == ["b?", "c?"]
    report = _build(tmp_path, [SourceConfig(str(src), "pairs")])
    assert report["per_filter"] == {E.MALFORMED_ROW: 1}


def test_duplicates_by_pair_or_by_prompt_and_near_duplicates(tmp_path: Path) -> None:
    question = (
        "A shop sells apples at three for a dollar and pears at two for a dollar. How much do six apples and "
        "four pears cost together, and how much change is left from a ten dollar note?"
    )
    rows = [
        {"prompt": question, "chosen": "Four dollars; six dollars change.", "rejected": "Ten dollars."},
        {"prompt": question.upper(), "chosen": "four dollars, six dollars change", "rejected": "ten dollars"},
        {"prompt": question, "chosen": "Four dollars; six dollars of change.", "rejected": "Ten dollars."},
    ]
    src = _write_jsonl(tmp_path / "d.jsonl", rows)
    report = _build(tmp_path, [SourceConfig(str(src), "pairs")], near_dedup=False)
    assert report["per_filter"] == {E.DUPLICATE_EXACT: 1}  # same pair after normalisation
    report = _build(tmp_path, [SourceConfig(str(src), "pairs")], near_dedup=False, pair_dedup="prompt")
    assert report["per_filter"] == {E.DUPLICATE_EXACT: 2}  # one pair per prompt
    report = _build(tmp_path, [SourceConfig(str(src), "pairs")], near_dedup_threshold=0.8)
    assert report["per_filter"] == {E.DUPLICATE_EXACT: 1, E.DUPLICATE_NEAR: 1}


def test_over_length_is_dropped_by_the_longer_side_never_truncated(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    short = "<think>\nShort.\n</think>\n\nOK."
    long = "<think>\n" + "many words of careful thought " * 60 + "\n</think>\n\nOK then."
    rows = [
        {"id": "fits", "prompt": "Q1?", "chosen": short, "rejected": "<think>\nNo.\n</think>\n\nNo."},
        {"id": "long-rejected", "prompt": "Q2?", "chosen": short, "rejected": long},
        {"id": "long-chosen", "prompt": "Q3?", "chosen": long, "rejected": short.replace("OK", "No")},
    ]
    src = _write_jsonl(tmp_path / "l.jsonl", rows)
    report = _build(
        tmp_path, [SourceConfig(str(src), "pairs")], cutoff_len=128, tokenizer=str(tiny_model_dir)
    )
    assert report["per_filter"] == {E.TOO_LONG: 2}
    assert [r["id"] for r in _out_rows(tmp_path)] == ["l/fits"]
    assert report["token_lengths"]["kept"]["count"] == 1


def test_decontamination_of_prompts(tmp_path: Path) -> None:
    report = _build(
        tmp_path,
        [SourceConfig(str(SAMPLES / "pref_ultrafeedback.jsonl"), "ultrafeedback")],
        benchmarks=[str(SAMPLES / "benchmark.jsonl")],
    )
    assert report["per_filter"][E.CONTAMINATED] == 1
    assert all("positive real numbers" not in r["prompt"][-1]["content"] for r in _out_rows(tmp_path))


# --- on-policy pairs -----------------------------------------------------------------------------------


def _sample(group: str, completion: str, **score) -> dict:
    return {"id": group, "prompt": [_user(f"Question {group}")], "completion": completion, **score}


def test_on_policy_pairs_from_eval_verdicts(tmp_path: Path) -> None:
    report = _build(
        tmp_path, [SourceConfig(str(SAMPLES / "pref_eval_samples.jsonl"), "samples")], pairs_per_prompt=2
    )
    rows = _out_rows(tmp_path)
    assert [r["id"] for r in rows] == [
        "pref_eval_samples/q1",
        "pref_eval_samples/q1#1",
        "pref_eval_samples/q3",
    ]
    # q1: two correct, one wrong, one truncated; the truncated one is the worst (an unfinished rejected side)
    assert rows[0]["chosen"]["content"] == "<think>\nTwo plus three is five.\n</think>\n\n$\\boxed{5}$"
    assert rows[0]["rejected"]["content"] == "<think>\n2 + 3 = 5 and then"
    assert rows[1]["chosen"]["content"] == "<think>\n2 + 3 = 5.\n</think>\n\nThe answer is $\\boxed{5}$."
    assert rows[1]["rejected"]["content"] == "<think>\n2 + 3 = 6.\n</think>\n\n$\\boxed{6}$"
    assert (rows[0]["score_chosen"], rows[0]["score_rejected"]) == (1.0, 0.0)
    assert (
        rows[2]["rejected"]["content"] == "<think>\nGuess.\n</think>\n\n$\\boxed{4}$"
    )  # undecidable left out
    assert report["per_filter"] == {E.NO_PAIR: 1}
    [reject] = [json.loads(line) for line in (tmp_path / "out" / "p.rejects.jsonl").read_text().splitlines()]
    assert reject["row"]["id"] == "q2" and reject["line"] == 5
    assert reject["detail"] == "2 samples, 2 scored, all 0; no better and worse sample to pair"


def test_an_unfinished_sample_is_never_chosen(tmp_path: Path) -> None:
    rows = [
        _sample("a", "cut off while still think", reward=5.0),  # the best score, but no answer
        _sample("a", "r</think>\n\nfinished", reward=1.0),
        _sample("a", "r</think>\n\nworse", reward=0.0),
        _sample("b", "cut off", verdict="wrong", truncated=True),
        _sample("b", "also cut off", verdict="correct", truncated=True),  # a truncated sample is never right
    ]
    src = _write_jsonl(tmp_path / "s.jsonl", rows)
    report = _build(tmp_path, [SourceConfig(str(src), "samples")], pairs_per_prompt=2)
    [pair] = _out_rows(tmp_path)
    assert pair["chosen"]["content"] == "<think>\nr\n</think>\n\nfinished"
    assert pair["rejected"]["content"] == "<think>\nr\n</think>\n\nworse"
    assert report["per_filter"] == {E.NO_PAIR: 1}
    unfinished = {"prompt": "q", "chosen": "A", "rejected": "<think>\nhalf", "rejected_unfinished": True}
    src = _write_jsonl(tmp_path / "u.jsonl", [unfinished, {**unfinished, "rejected": "<think>\nx</think>y"}])
    report = _build(tmp_path, [SourceConfig(str(src), "pairs")])
    assert _out_rows(tmp_path)[0]["rejected"]["content"] == "<think>\nhalf"
    assert report["per_filter"] == {E.MALFORMED_ROW: 1}  # marked unfinished, yet it closes its block
    with pytest.raises(E.DataPrepError, match="empty_answer: rejected is unfinished: no answer to keep"):
        _build(tmp_path, [SourceConfig(str(src), "pairs")], thinking="strip")


def test_on_policy_pairs_by_reward_rank_best_with_worst(tmp_path: Path) -> None:
    rows = [
        _sample("a", "r</think>\n\nfirst", reward=0.2),
        _sample("a", "r</think>\n\nbest", reward=0.9),
        _sample("a", "r</think>\n\nworst", reward=-0.5),
        _sample("a", "r</think>\n\nsecond", reward=0.5),
        _sample("b", "r</think>\n\nsame", reward=0.3),
        _sample("b", "r</think>\n\nalso the same score", reward=0.3),
        _sample("c", "r</think>\n\nok", verdict="correct"),
        _sample("c", "r</think>\n\nundecided", verdict="undecidable"),
        {"prompt": [_user("x")], "completion": 7},  # not a sample
    ]
    src = _write_jsonl(tmp_path / "s.jsonl", rows)
    report = _build(tmp_path, [SourceConfig(str(src), "samples")], pairs_per_prompt=3)
    answers = [(r["id"], r["chosen"]["content"], r["rejected"]["content"]) for r in _out_rows(tmp_path)]
    assert [(i, c.rsplit("\n", 1)[1], r.rsplit("\n", 1)[1]) for i, c, r in answers] == [
        ("s/a", "best", "worst"),  # best with worst, then second best with second worst
        ("s/a#1", "second", "first"),
    ]
    assert report["per_filter"] == {E.NO_PAIR: 2, E.MALFORMED_ROW: 1}
    rejects = [json.loads(line) for line in (tmp_path / "out" / "p.rejects.jsonl").read_text().splitlines()]
    details = {r["row"].get("id"): r["detail"] for r in rejects}
    assert details["b"] == "2 samples, 2 scored, all 0.3; no better and worse sample to pair"
    assert details["c"].endswith("left out: undecidable 1; no better and worse sample to pair")


def test_on_policy_pairs_scored_by_the_answer_checker(tmp_path: Path) -> None:
    """Samples with a reference and no verdict (e.g. from another engine) are judged by ring_trl.answers."""
    rows = [
        _sample("a", "6 * 2</think>\n\nThe answer is $\\boxed{13}$.", answer="12"),
        _sample("a", "6 * 2</think>\n\nThe answer is $\\boxed{12.0}$.", answer="12"),
        _sample("b", "hm</think>\n\n(B)", reference="B", answer_type="choice", choices=["1", "2"]),
        _sample("b", "hm</think>\n\n(A)", reference="B", answer_type="choice", choices=["1", "2"]),
    ]
    src = _write_jsonl(tmp_path / "s.jsonl", rows)
    _build(tmp_path, [SourceConfig(str(src), "samples")])
    pairs = {r["id"]: (r["chosen"]["content"], r["rejected"]["content"]) for r in _out_rows(tmp_path)}
    assert pairs["s/a"][0].endswith("{12.0}$.") and pairs["s/a"][1].endswith("{13}$.")
    assert pairs["s/b"][0].endswith("(B)") and pairs["s/b"][1].endswith("(A)")


def test_on_policy_pairs_scored_by_an_isolated_reward_function(tmp_path: Path) -> None:
    reward = tmp_path / "brevity.py"
    reward.write_text(
        "def shorter_is_better(prompts, completions, **_):\n"
        "    return [-float(len(c[0]['content'])) for c in completions]\n"
    )
    rows = [_sample("a", "r</think>\n\nshort"), _sample("a", "r</think>\n\na much longer answer")]
    src = _write_jsonl(tmp_path / "s.jsonl", rows)
    _build(tmp_path, [SourceConfig(str(src), "samples")], samples_reward=f"{reward}:shorter_is_better")
    [pair] = _out_rows(tmp_path)
    assert pair["chosen"]["content"].endswith("short") and pair["rejected"]["content"].endswith("answer")
    assert pair["score_chosen"] == -len("r</think>\n\nshort")


# --- command line and LLaMA-Factory --------------------------------------------------------------------


def test_cli_build_pref_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--output-dir", str(tmp_path / "out"), "--name", "p", "--cutoff-len", "0", "--workers", "0"]
    assert main(["build-pref", "--input", str(SAMPLES / "pref_hh.jsonl"), *common]) == E.EXIT_OK
    out = capsys.readouterr().out
    assert "p: 2 train / 0 val rows, 3 rejected of 5 read" in out and "rejected empty_response: 1" in out
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text())["p"]
    assert info["ranking"] is True and info["columns"] == {
        "messages": "prompt",
        "chosen": "chosen",
        "rejected": "rejected",
    }
    samples = str(SAMPLES / "pref_eval_samples.jsonl")
    assert main(["build-pref", "--from-samples", samples, *common]) == E.EXIT_OK
    assert "p: 2 train / 0 val rows, 1 rejected of 3 read" in capsys.readouterr().out
    hh = str(SAMPLES / "pref_hh.jsonl")
    assert main(["build-pref", "--input", hh, "--fail-on-rejects", *common]) == E.EXIT_REJECTED
    capsys.readouterr()
    assert main(["build-pref", "--input", hh, "--format", "sharegpt", *common]) == E.EXIT_USAGE
    assert "unknown preference format 'sharegpt'" in capsys.readouterr().err
    assert main(["build-pref", "--input", hh, "--thinking", "drop", *common]) == E.EXIT_USAGE
    config = str(REPO / "data_prep" / "configs" / "demo_sft.yaml")
    assert main(["build-pref", "--config", config, *common]) == E.EXIT_USAGE
    assert "for build-sft, not build-pref" in capsys.readouterr().err
    unpaired = _write_jsonl(tmp_path / "u.jsonl", [_sample("a", "x</think>y", verdict="wrong")])
    assert main(["build-pref", "--from-samples", str(unpaired), *common]) == E.EXIT_FATAL
    assert "all 1 rows were rejected (no_pair 1)" in capsys.readouterr().err


def test_llamafactory_reads_every_pair_of_the_demo_config(tmp_path: Path, tiny_model_dir: Path) -> None:
    from ring_trl.llamafactory.render import render_pairs_with_llamafactory

    config = str(REPO / "data_prep" / "configs" / "demo_pref.yaml")
    out = tmp_path / "data"
    assert (
        main(["build-pref", "--config", config, "--output-dir", str(out), "--tokenizer", str(tiny_model_dir)])
        == 0
    )
    rows = [json.loads(line) for line in (out / "demo_pref.jsonl").read_text().splitlines()]
    assert len(rows) == 10
    tokenizer, pairs = render_pairs_with_llamafactory(
        {
            "model_name_or_path": str(tiny_model_dir),
            "trust_remote_code": True,
            "stage": "dpo",
            "finetuning_type": "lora",
            "dataset": "demo_pref",
            "dataset_dir": str(out),
            "template": "bailing",
            "cutoff_len": 1024,
        }
    )
    assert len(pairs) == len(rows)  # LLaMA-Factory skips malformed ranking rows silently: none were
    for row, pair in zip(rows, pairs, strict=True):
        trained = tokenizer.decode([t for t in pair.chosen.labels if t >= 0])
        assert trained == row["chosen"]["content"] + tokenizer.eos_token


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_data_pref_runs_build_pref_with_its_config() -> None:
    def dry_run(*args: str) -> str:
        proc = subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True, check=True)
        [line] = [ln for ln in proc.stdout.splitlines() if "-m data_prep" in ln]
        return " ".join(line[line.index("-m data_prep") :].split())

    assert dry_run("data-pref") == "-m data_prep build-pref --config data_prep/configs/demo_pref.yaml"
    strict = dry_run("data-pref", "CONFIG=x.yaml", "STRICT=1")
    assert strict == "-m data_prep build-pref --config x.yaml --strict --fail-on-rejects"
