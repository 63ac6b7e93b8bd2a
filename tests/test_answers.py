"""The answer checker: the case table (every kind), extraction, kind detection, references, and safety of the
math-verify helper (threads, forked workers, a helper that overruns its deadline)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from ring_trl.answers import (
    MathVerifyWorker,
    check,
    default_math_verifier,
    detect_kind,
    final_answer,
    last_boxed,
    reference_status,
)
from tests.answer_cases import CASES, Case


def _case_id(case: Case) -> str:
    return f"{case.answer or case.completion!r}~{case.reference!r}"[:60]


def test_case_table_is_big_and_covers_every_kind() -> None:
    assert len(CASES) >= 80
    kinds = {check(c.full_completion(), c.reference, c.answer_type, c.choices).kind for c in CASES}
    assert kinds == {"math", "number", "choice", "yesno", "text"}
    assert {c.expected for c in CASES} == {"correct", "wrong", "undecidable"}
    assert sum(c.reported for c in CASES) == 7


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_case_table(case: Case) -> None:
    judgement = check(case.full_completion(), case.reference, case.answer_type, case.choices)
    assert judgement.verdict == case.expected, judgement


def test_extraction_reads_after_think_and_prefers_the_last_complete_box() -> None:
    assert final_answer("a</think>b</think> c ") == "c"
    assert final_answer("still thinking \\boxed{3}") is None
    assert last_boxed("x \\boxed{\\frac{1}{2}} y \\boxed{\\sqrt{2}}") == "\\sqrt{2}"
    assert last_boxed("\\boxed{5} and then \\boxed{6") == "5"  # a box cut off by the token limit
    assert last_boxed("\\fbox{A}") == "A"
    assert last_boxed("no box") is None


@pytest.mark.parametrize(
    ("reference", "kind"),
    [
        ("42", "number"),
        ("-0.5", "number"),
        ("1,000", "number"),
        ("\\frac{1}{3}", "number"),
        ("x^2+1", "math"),
        ("\\sqrt{2}", "math"),
        ("(1, 2)", "math"),
        ("x", "math"),
        ("\\pi", "math"),
        ("B", "choice"),
        ("(C)", "choice"),
        ("A, C", "choice"),
        ("\\text{(D)}", "choice"),
        ("Yes", "yesno"),
        ("false", "yesno"),
        ("Paris", "text"),
        ("New York", "text"),
        ("\\text{Evelyn}", "text"),
    ],
)
def test_kind_detection(reference: str, kind: str) -> None:
    assert detect_kind(reference) == kind


def test_unknown_answer_type_is_an_error() -> None:
    with pytest.raises(ValueError, match="answer_type 'essay'"):
        check("a</think>b", "b", answer_type="essay")


def test_reference_status_is_the_rlvr_verifiable_test() -> None:
    assert reference_status("B").kind == "choice" and reference_status("B").usable
    assert reference_status("Paris").kind == "text" and reference_status("Paris").usable
    assert reference_status("yes").usable and reference_status("27").usable
    assert reference_status("x^2+1").usable
    assert reference_status("\\frac{", answer_type="math").status == "unparsable"
    assert reference_status("  ").status == "unparsable"
    assert reference_status("maybe", answer_type="yesno").status == "unparsable"
    assert reference_status("see the proof above, it uses contradiction twice").status == "unparsable"
    assert reference_status("the train arrives at 3 in the afternoon").status == "unparsable"


MATH_PAIRS = [
    ("a</think>\\boxed{x^2-1}", "(x-1)(x+1)", "correct"),
    ("a</think>\\boxed{\\sqrt{8}}", "2\\sqrt{2}", "correct"),
    ("a</think>\\boxed{\\sqrt{7}}", "2\\sqrt{2}", "wrong"),
    ("a</think>x = \\frac{\\pi}{3}", "\\pi/3", "correct"),
]


def _verdicts(pairs: list[tuple[str, str, str]]) -> list[str]:
    return [check(text, reference).verdict for text, reference, _ in pairs]


def test_math_checks_from_many_threads_at_once() -> None:
    expected = [verdict for *_, verdict in MATH_PAIRS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: _verdicts(MATH_PAIRS), range(8)))
    assert results == [expected] * 8


def _verdicts_and_pid(pairs: list[tuple[str, str, str]]) -> tuple[list[str], int]:
    return _verdicts(pairs), os.getpid()


def test_math_checks_in_a_forked_worker_process() -> None:
    """data_prep's workers are forked: a worker must start its own helper, not share its parent's pipes."""
    default_math_verifier().verify("\\boxed{1}", "1")  # the parent's helper exists before the fork
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        results = list(pool.map(_verdicts_and_pid, [MATH_PAIRS[:2], MATH_PAIRS[2:]]))
    assert [v for verdicts, _ in results for v in verdicts] == [v for *_, v in MATH_PAIRS]
    assert all(pid != os.getpid() for _, pid in results)
    assert check("a</think>\\boxed{2}", "2").correct  # the parent's helper still answers


def test_an_overrunning_helper_is_killed_and_the_check_is_undecidable() -> None:
    worker = MathVerifyWorker(timeout_s=1)
    try:
        assert worker.verify("\\boxed{\\sqrt{4}}", "2").verdict is True
        worker._deadline_s = lambda: 0.0  # type: ignore[method-assign]  # every answer now comes too late
        judgement = check("a</think>\\boxed{\\sqrt{9}}", "3", verifier=worker)
        assert judgement.verdict == "undecidable" and judgement.reason == "timeout"
        assert worker.restarts == 1
        del worker._deadline_s
        assert check("a</think>\\boxed{\\sqrt{16}}", "4", verifier=worker).correct  # a fresh helper
    finally:
        worker.close()


# ------------------------------------------------------------------ the GRPO rewards use the same checker
REWARD_OF = {"correct": 1.0, "wrong": 0.0, "undecidable": None}


def test_answer_match_reward_agrees_with_the_case_table() -> None:
    from ring_trl.grpo.rewards import answer_match
    from ring_trl.grpo.rewards.answer_match import take_undecidable_count

    take_undecidable_count()
    rewards = answer_match(
        prompts=[None] * len(CASES),
        completions=[[{"role": "assistant", "content": c.full_completion()}] for c in CASES],
        completion_ids=[[0]] * len(CASES),
        answer=[c.reference for c in CASES],
        answer_type=[c.answer_type for c in CASES],
        choices=[c.choices for c in CASES],
    )
    assert rewards == [REWARD_OF[c.expected] for c in CASES]
    assert take_undecidable_count() == sum(c.expected == "undecidable" for c in CASES)


def test_math_answer_scores_math_rows_and_skips_other_kinds() -> None:
    from ring_trl.grpo.rewards import math_answer

    completions = ["a</think>\\boxed{B}", "a</think>\\boxed{7}", "a</think>\\boxed{x^2-1}", "a</think>Paris"]
    scores = math_answer([None] * 4, completions, answer=["B", "7", "(x-1)(x+1)", "Paris"])
    assert scores == [None, 1.0, 1.0, None]  # a correct "B" is no longer a wrong 0.0
    assert math_answer([None], ["a</think>7"], answer=["7"], task=["code"]) == [None]


# ------------------------------------------------------- data_prep filters with the same checker (issue 10)
def _am_row(question: str, answer: str, reference: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": question, "info": {"reference_answer": reference}},
            {
                "role": "assistant",
                "content": f"<think>\nThinking it over.\n</think>\n<answer>\n{answer}\n</answer>",
            },
        ]
    }


def _build(tmp_path, kind: str, rows: list[dict], fmt: str) -> tuple[dict, list[dict]]:  # type: ignore[no-untyped-def]
    import json

    from data_prep.config import BuildConfig, SourceConfig
    from data_prep.pipeline import Build

    source = tmp_path / f"{kind}.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = BuildConfig(
        inputs=[SourceConfig(str(source), fmt)],
        output_dir=str(tmp_path / "out"),
        dataset_name=kind,
        cutoff_len=0,
        workers=0,
        progress=False,
        shuffle=False,
    )
    config.validate()
    report = Build(config, kind).run().report
    kept = [json.loads(line) for line in (tmp_path / "out" / f"{kind}.jsonl").read_text().splitlines()]
    return report, kept


def test_build_sft_keeps_right_answers_of_every_kind_and_drops_anagrams(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = [
        _am_row("Which option is right? A) 1 B) 2", "B", "B"),
        _am_row("What is the capital of France?", "Paris", "Paris"),
        _am_row("Is 7 prime?", "Yes", "yes"),
        _am_row("Pick one: (A) red (B) blue (C) green (D) black", "(D)", "D"),
        _am_row("What is the capital of France, again?", "$\\boxed{Sirap}$", "Paris"),
        _am_row("Write the word 'on' backwards.", "$\\boxed{no}$", "on"),
    ]
    report, kept = _build(tmp_path, "sft", rows, "am")
    assert report["per_filter"] == {"answer_mismatch": 2}
    assert [r["messages"][0]["content"][:10] for r in kept] == [
        "Which opti",
        "What is th",
        "Is 7 prime",
        "Pick one: ",
    ]


def test_build_rlvr_keeps_what_the_reward_can_score(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ring_trl.grpo.rewards import answer_match

    rows = [
        {"prompt": "Which option is right? A) 1 B) 2", "answer": "B"},
        {"prompt": "What is the capital of France?", "answer": "Paris"},
        {"prompt": "What is 6 * 7?", "answer": "42"},
        {"prompt": "Simplify (x-1)(x+1).", "answer": "x^2-1"},
        {"prompt": "Prove it.", "answer": "see the proof above, which is by contradiction"},
        {"prompt": "Broken reference.", "answer": "\\frac{"},
    ]
    report, kept = _build(tmp_path, "rlvr", rows, "simple")
    assert report["per_filter"] == {"unverifiable_reference": 2}
    assert [r["answer"] for r in kept] == ["B", "Paris", "42", "x^2-1"]
    right = ["a</think>\\boxed{B}", "a</think>Paris", "a</think>42", "a</think>\\boxed{x^2 - 1}"]
    rewards = answer_match(
        [None] * 4, right, answer=[r["answer"] for r in kept], task=[r["task"] for r in kept]
    )
    assert rewards == [1.0, 1.0, 1.0, 1.0]
