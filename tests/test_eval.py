"""The evaluator: metrics against hand-computed values, benchmark layouts, one-line errors, agreement with the
answer-checker case table (`score`), and `make eval` + `--compare` on the tiny model offline on CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ring_trl.eval.backends import vllm_available
from ring_trl.eval.cli import main
from ring_trl.eval.data import CHOICE_INSTRUCTION, MATH_INSTRUCTION, load_problems
from ring_trl.eval.metrics import SampleScore, majority_correct, pass_at_k, summarize
from ring_trl.eval.scoring import Generated, grade
from ring_trl.runtime import UsageError, run_cli
from tests.answer_cases import CASES
from tests.conftest import REPO_ROOT


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ metrics
@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 1, 1, 0.25),
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (4, 2, 2, 5 / 6),  # 1 - C(2,2)/C(4,2)
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (5, 0, 3, 0.0),
        (4, 3, 2, 1.0),  # fewer wrong samples than k: always solved
        (1, 1, 1, 1.0),
    ],
)
def test_pass_at_k_is_the_unbiased_estimator(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def _s(correct: bool, vote: str | None, truncated: bool = False, undecidable: bool = False, length: int = 0):  # type: ignore[no-untyped-def]
    return SampleScore(correct, vote, truncated, undecidable, length)


def test_metrics_against_hand_computed_values() -> None:
    problems = [
        # one right, the majority ("8") wrong
        [
            _s(True, "7", length=1),
            _s(False, "8", length=2),
            _s(False, "8", length=3),
            _s(False, "9", length=4),
        ],
        # majority "3" right; one sample without an answer does not vote
        [
            _s(True, "3", length=5),
            _s(True, "3", length=6),
            _s(False, "5", length=7),
            _s(False, None, length=8),
        ],
        # two truncated (one would have voted "x"), one undecidable; "4" and "5" tie: first seen wins
        [
            _s(False, None, truncated=True, length=9),
            _s(False, "x", truncated=True, length=10),
            _s(False, "4", undecidable=True, length=11),
            _s(False, "5", length=12),
        ],
    ]
    metrics = summarize(problems, [1, 2, 4])
    assert metrics == {
        "avg@4": 0.25,  # 3 of 12 samples
        "pass@1": 0.25,  # mean(1/4, 2/4, 0)
        "pass@2": round((0.5 + 5 / 6 + 0) / 3, 4),
        "pass@4": round(2 / 3, 4),
        "maj@4": round(1 / 3, 4),
        "truncated_frac": round(2 / 12, 4),
        "undecidable": 1,
        "response_tokens_mean": 6.5,  # lengths 1..12
        "response_tokens_p50": 6.5,
        "response_tokens_p90": 10.9,  # numpy's linear interpolation: 10 + 0.9 * (11 - 10)
    }
    assert list(metrics)[:6] == ["avg@4", "pass@1", "pass@2", "pass@4", "maj@4", "truncated_frac"]


def test_majority_ties_go_to_the_answer_seen_first() -> None:
    assert majority_correct([_s(True, "a"), _s(False, "b"), _s(False, "b"), _s(True, "a")]) is True
    assert majority_correct([_s(False, "b"), _s(True, "a"), _s(True, "a"), _s(False, "b")]) is False
    assert majority_correct([_s(False, None), _s(True, "a", truncated=True)]) is False


def test_truncated_samples_count_as_wrong(tmp_path: Path) -> None:
    data = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": "1+1? Put it in \\boxed{}.", "answer": "2"}])
    problems = load_problems(data).problems
    samples = [
        Generated("ok</think>\\boxed{2}", 5, hit_limit=False),
        Generated("ok</think>\\boxed{2}", 8, hit_limit=True),  # right text, but the token limit cut it
        Generated("still thinking \\boxed{2}", 8, hit_limit=False),  # never closed </think>
        Generated("ok</think>\\boxed{3}", 5, hit_limit=False),
    ]
    rows, scores = grade(problems, [samples])
    assert [(r["verdict"], r["reason"], r["truncated"]) for r in rows] == [
        ("correct", "compared_numbers", False),
        ("wrong", "truncated", True),
        ("wrong", "no_final_answer", True),
        ("wrong", "compared_numbers", False),
    ]
    metrics = summarize(scores, [1])
    assert metrics["truncated_frac"] == 0.5 and metrics["avg@4"] == 0.25
    answer_only, _ = grade(problems, [[Generated("\\boxed{2}")]], answer_only=True)
    assert answer_only[0]["correct"] and not answer_only[0]["truncated"]


# ------------------------------------------------------------------------------------------------ layouts
def test_benchmark_layouts(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    math500 = _write_jsonl(
        tmp_path / "math500.jsonl",
        [{"problem": "Compute $1+1$.", "answer": "2", "solution": "...", "unique_id": "test/algebra/1.json"}],
    )
    loaded = load_problems(math500)
    layout, [problem] = loaded.layout, loaded.problems
    assert layout == "math" and problem.id == "test/algebra/1.json" and problem.reference == "2"
    assert problem.messages[-1]["content"] == f"Compute $1+1$.\n\n{MATH_INSTRUCTION}"

    aime = tmp_path / "aime.json"
    aime.write_text(json.dumps([{"ID": "2024-I-1", "Problem": "Find N.", "Answer": 204}]), encoding="utf-8")
    loaded = load_problems(aime)
    layout, [problem] = loaded.layout, loaded.problems
    assert layout == "math" and problem.reference == "204" and problem.id == "2024-I-1"

    gpqa_rows = [
        {
            "Record ID": f"rec{i}",
            "Question": f"Question {i}?",
            "Correct Answer": "right",
            "Incorrect Answer 1": "wrong one",
            "Incorrect Answer 2": "wrong two",
            "Incorrect Answer 3": "wrong three",
        }
        for i in range(6)
    ]
    pq.write_table(pa.Table.from_pylist(gpqa_rows), tmp_path / "gpqa.parquet")
    loaded = load_problems(tmp_path / "gpqa.parquet", seed=1)
    layout, problems = loaded.layout, loaded.problems
    assert layout == "gpqa"
    for problem in problems:
        letter = problem.reference
        assert problem.answer_type == "choice" and problem.choices[ord(letter) - ord("A")] == "right"
        assert f"{letter}) right" in problem.messages[-1]["content"]
        assert problem.messages[-1]["content"].endswith(CHOICE_INSTRUCTION)
    assert len({p.reference for p in problems}) > 1  # options really are shuffled
    again = [p.reference for p in load_problems(tmp_path / "gpqa.parquet", seed=1).problems]
    assert again == [p.reference for p in problems]  # and reproducibly so

    mmlu = _write_jsonl(
        tmp_path / "mmlu.jsonl", [{"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1}]
    )
    loaded = load_problems(mmlu)
    layout, [problem] = loaded.layout, loaded.problems
    assert layout == "choices" and problem.reference == "B" and "B) 4" in problem.messages[-1]["content"]

    rlvr = _write_jsonl(
        tmp_path / "rlvr.jsonl",
        [
            {
                "id": "q1",
                "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
                "answer": "yes",
            }
        ],
    )
    loaded = load_problems(rlvr)
    layout, [problem] = loaded.layout, loaded.problems
    assert layout == "rlvr" and problem.messages[0] == {"role": "system", "content": "Be brief."}

    loaded = load_problems(REPO_ROOT / "data" / "eval" / "choice.jsonl", limit=3)
    layout, shipped = loaded.layout, loaded.problems
    assert layout == "rlvr" and len(shipped) == 3
    assert shipped[0].messages[-1]["content"].count("A) ") == 1  # the shipped prompt is used as written


def test_the_kits_own_rlvr_file_with_code_tasks_is_evaluated_without_them(tmp_path: Path) -> None:
    """build-rlvr mixes math rows and code tasks (graded by tests): eval keeps the math, lists the code tasks."""
    prompt = [{"role": "user", "content": "What is 2 + 3?"}]
    code = {"id": "c1", "prompt": prompt, "answer": "", "task": "code", "tests": "assert f() == 1"}
    rlvr = _write_jsonl(
        tmp_path / "rlvr.jsonl", [{"id": "m1", "prompt": prompt, "answer": "5", "task": "math"}, code]
    )
    loaded = load_problems(rlvr)
    assert [p.id for p in loaded.problems] == ["m1"]
    assert loaded.skipped_code_tasks == [f"{rlvr}:line 2"]

    only_code = _write_jsonl(tmp_path / "code.jsonl", [code])
    with pytest.raises(UsageError, match=r"code\.jsonl: no rows that can be graded .*1 code tasks"):
        load_problems(only_code)


def test_shipped_eval_sets_are_the_generator_output(tmp_path: Path) -> None:
    from ring_trl.eval.sets import main as make_sets

    assert make_sets(["--output", str(tmp_path), "--seed", "0"]) == 0
    shipped = REPO_ROOT / "data" / "eval"
    names = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    assert names == ["arithmetic.jsonl", "choice.jsonl", "mixed.jsonl", "short_text.jsonl", "yesno.jsonl"]
    for name in names:
        assert (tmp_path / name).read_text() == (shipped / name).read_text(), name


# ------------------------------------------------------------------------------------------ one-line errors
def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = run_cli(main, argv, "python -m ring_trl.eval")
    err = capsys.readouterr().err.strip()
    return code, err


def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_model_dir: Path
) -> None:
    no_answer = _write_jsonl(tmp_path / "m.jsonl", [{"problem": "a", "answer": "1"}, {"problem": "b"}])
    unknown = _write_jsonl(tmp_path / "u.jsonl", [{"text": "a", "label": 1}])
    good = _write_jsonl(tmp_path / "g.jsonl", [{"problem": "a", "answer": "1"}])
    broken = tmp_path / "b.parquet"
    broken.write_bytes(b"not parquet at all")
    model = ["--model", str(tiny_model_dir)]
    cases = [
        ([*model, "--data", str(no_answer)], f"{no_answer}:line 2: no 'answer' value"),
        ([*model, "--data", str(unknown)], f"{unknown}:line 1: unknown layout"),
        ([*model, "--data", str(broken)], f"{broken}: cannot read Parquet"),
        ([*model, "--data", str(tmp_path / "missing.jsonl")], "missing.jsonl does not exist"),
        (["--model", str(tmp_path / "nope"), "--data", str(no_answer)], "model folder"),
        ([*model, "--data", str(no_answer), "--n", "2", "--k", "1,4"], "--k 4 is larger than the 2 samples"),
        (["--compare", str(tmp_path)], "--compare needs at least two"),
        (
            ["score", "--data", str(no_answer), "--completions", str(tmp_path / "c.jsonl")],
            "line 2: no 'answer'",
        ),
    ]
    if not vllm_available():
        cases.append(([*model, "--data", str(good), "--backend", "vllm"], "vLLM is not installed"))
    for argv, message in cases:
        code, err = _cli(argv, capsys)
        assert code == 2, (argv, err)
        assert message in err and "\n" not in err and "Traceback" not in err, err


# ------------------------------------------------------- the evaluator agrees with the case table (score)
def test_score_agrees_with_the_answer_checker_case_table(tmp_path: Path) -> None:
    data = _write_jsonl(
        tmp_path / "cases.jsonl",
        [
            {"id": f"case-{i}", "prompt": "Answer it.", "answer": c.reference, "answer_type": c.answer_type}
            | ({"choices": c.choices} if c.choices else {})
            for i, c in enumerate(CASES)
        ],
    )
    completions = _write_jsonl(
        tmp_path / "completions.jsonl",
        [{"id": f"case-{i}", "completions": [c.full_completion()]} for i, c in enumerate(CASES)],
    )
    out = tmp_path / "scored"
    assert (
        run_cli(
            main, ["score", "--data", str(data), "--completions", str(completions), "--output-dir", str(out)]
        )
        == 0
    )
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["verdict"] for r in rows] == [c.expected for c in CASES]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["undecidable"] == sum(c.expected == "undecidable" for c in CASES)
    assert summary["metrics"]["avg@1"] == round(sum(c.expected == "correct" for c in CASES) / len(CASES), 4)
    assert set(rows[0]) >= {"id", "prompt", "completion", "extracted", "verdict", "reference", "answer_type"}


# --------------------------------------------------------------- make eval + --compare on the tiny model
def _make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "DATA", "N", "K", "ARGS")}
    return subprocess.run(
        ["make", "-s", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_make_eval_on_the_tiny_model_and_compare(tmp_path: Path, tiny_model_dir: Path) -> None:
    base = tmp_path / "base"
    run = _make(
        "eval",
        f"MODEL={tiny_model_dir}",
        "DATA=data/eval/mixed.jsonl",
        "N=2",
        "K=1,2",
        f"ARGS=--limit 2 --max-new-tokens 6 --backend hf --no-progress --output-dir {base}",
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert sorted(p.name for p in base.iterdir()) == ["report.md", "samples.jsonl", "summary.json"]
    summary = json.loads((base / "summary.json").read_text())
    assert set(summary["metrics"]) >= {"avg@2", "pass@1", "pass@2", "maj@2", "truncated_frac", "undecidable"}
    assert summary["run"]["backend"] == "hf" and summary["counts"] == {
        "problems": 2,
        "samples_per_problem": 2,
        "samples": 4,
    }
    assert all(
        row["tokens"] <= 6 for row in map(json.loads, (base / "samples.jsonl").read_text().splitlines())
    )

    # a second run graded from outside completions: both problems answered right
    ids = list(summary["per_problem"])
    completions = _write_jsonl(
        tmp_path / "good.jsonl",
        [
            {"id": ids[0], "completions": ["56 - 26</think>\\boxed{30}"] * 2},
            {"id": ids[1], "completions": ["x</think>\\boxed{72}"] * 2},
        ],
    )
    good = tmp_path / "good"
    assert (
        run_cli(
            main,
            [
                "score",
                "--data",
                "data/eval/mixed.jsonl",
                "--completions",
                str(completions),
                "--output-dir",
                str(good),
            ],
        )
        == 0
    )

    compared = _make("eval", f"ARGS=--compare {base} {good} --output-dir {tmp_path / 'cmp'}")
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert "| metric | base | good |" in compared.stdout
    assert "| pass@1 | 0.0000 | 1.0000 |" in compared.stdout
    assert "base -> good: 2 better, 0 worse, 0 unchanged" in compared.stdout
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000


def test_vllm_backend_on_the_tiny_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Runs only where vLLM is installed (the vLLM environment): the real engine, not a stand-in."""
    pytest.importorskip("vllm")
    out = tmp_path / "vllm"
    argv = ["--model", str(tiny_model_dir), "--data", "data/eval/mixed.jsonl", "--limit", "2", "--n", "2"]
    argv += ["--max-new-tokens", "8", "--backend", "vllm", "--no-progress", "--output-dir", str(out)]
    assert run_cli(main, argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["backend"] == "vllm" and summary["counts"]["samples"] == 4
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert all(0 < row["tokens"] <= 8 for row in rows)
