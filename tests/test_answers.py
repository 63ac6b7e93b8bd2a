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
