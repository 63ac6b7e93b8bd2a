"""The answer-checker case table: (final answer, reference, expected verdict) for every kind.

Shared by tests/test_answers.py (the checker itself), the GRPO reward test and the evaluator test, so all
three are held to the same verdicts. `answer` is what the model wrote after `</think>`; a case with
`completion` set gives the whole completion instead (reasoning block included or missing).
Rows marked `reported` are the wrong verdicts filed in issue 10 (the old data filter / math_answer reward
got them wrong).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

C, W, U = "correct", "wrong", "undecidable"
REASONING = "Let me work it out step by step.\n</think>\n\n"


@dataclass(frozen=True)
class Case:
    answer: str
    reference: str
    expected: str
    answer_type: str | None = None
    choices: Any = None
    completion: str | None = None
    reported: bool = False

    def full_completion(self) -> str:
        return self.completion if self.completion is not None else REASONING + self.answer


GPQA_CHOICES = ["3.2 eV", "1.6 eV", "0.8 eV", "6.4 eV"]

CASES: list[Case] = [
    # ---- reported in issue 10 (wrong on the old code) ------------------------------------------------
    Case("B", "B", C, reported=True),
    Case("Paris", "Paris", C, reported=True),
    Case("Yes", "yes", C, reported=True),
    Case("(D)", "D", C, reported=True),
    Case("\\boxed{Sirap}", "Paris", W, reported=True),
    Case("\\boxed{no}", "on", W, reported=True),
    Case("The answer is B", "B", C, reported=True),
    # ---- math / number ---------------------------------------------------------------------------------
    Case("The answer is $\\boxed{7}$.", "7", C),
    Case("\\boxed{8}", "7", W),
    Case("\\frac{14}{2}", "7", C),
    Case("x = 7", "7", C),
    Case("7.0", "7", C),
    Case("1,000", "1000", C),
    Case("\\boxed{1{,}000}", "1000", C),
    Case("\\boxed{-3}", "-3", C),
    Case("\\boxed{3}", "-3", W),
    Case("\\boxed{0.5}", "\\frac{1}{2}", C),
    Case("\\boxed{\\dfrac{3}{4}}", "0.75", C),
    Case("3/4", "\\frac{3}{4}", C),
    Case("\\boxed{0.33}", "\\frac{1}{3}", W),
    Case("It is 25.", "25", C),
    Case("I think 24, no wait, \\boxed{25}", "25", C),
    Case("\\boxed{24} then \\boxed{25}", "24", W),  # the last box is the answer
    Case("\\boxed{2\\sqrt{3}}", "2\\sqrt3", C),
    Case("\\boxed{\\sqrt{12}}", "2\\sqrt{3}", C),
    Case("\\boxed{\\sqrt{13}}", "2\\sqrt{3}", W),
    Case("\\boxed{\\pi/2}", "\\frac{\\pi}{2}", C),
    Case("\\boxed{x^2+1}", "1+x^2", C),
    Case("\\boxed{x^2-1}", "(x-1)(x+1)", C),
    Case("\\boxed{x^2+2}", "1+x^2", W),
    Case("\\boxed{(1,2)}", "(1, 2)", C),
    Case("\\boxed{(2,1)}", "(1, 2)", W),
    Case("\\boxed{\\{1,2\\}}", "\\{2,1\\}", C),
    Case("\\boxed{50\\%}", "50\\%", C),
    Case("\\boxed{\\infty}", "\\infty", C),
    Case("\\boxed{10}", "10\\text{ inches}", C),
    Case("\\boxed{10 \\text{ feet}}", "10\\text{ inches}", W),  # words differ: never compared as symbols
    Case("Sirap", "Paris", W, answer_type="math"),  # forced math: still no anagram match
    Case("\\boxed{ab}", "ba", W, answer_type="math"),
    Case("\\boxed{Paris}", "Paris", C, answer_type="math"),
    Case("Paris", "7", W),  # a word for a number
    Case("seven", "7", W),
    Case("", "7", W),  # nothing after </think>
    Case("", "7", W, completion="7 is the answer, I think 7"),  # reasoning never closed: no final answer
    Case("", "7", C, completion="<think>easy</think>\\boxed{7}"),  # opening tag repeated by the model
    Case("", "7", W, completion="\\boxed{7} wait, let me recheck"),  # box inside unclosed reasoning
    Case("\\boxed{7}", "\\frac{", U, answer_type="math"),  # unparsable reference
    Case("\\boxed{7", "7", W),  # unclosed box: the text "\boxed{7" is not a plain number
    Case("\\boxed{12}", "12", C, answer_type="number"),
    Case("\\boxed{12.000}", "12", C, answer_type="number"),
    # ---- multiple choice -------------------------------------------------------------------------------
    Case("\\boxed{B}", "B", C),
    Case("\\boxed{b}", "B", C),
    Case("(B)", "B", C),
    Case("B.", "B", C),
    Case("B)", "B", C),
    Case("Answer: B", "B", C),
    Case("The answer is (C).", "B", W),
    Case("The correct answer is **B**.", "B", C),
    Case("B. 1.6 eV, because E = hf.", "B", C),
    Case("C", "B", W),
    Case("\\boxed{A, C}", "A,C", C),
    Case("A and C", "A, C", C),
    Case("\\boxed{A}", "A,C", W),
    Case("\\boxed{A,B,C}", "A,C", W),
    Case("1.6 eV", "B", C, choices=GPQA_CHOICES),  # the option's text counts when choices are given
    Case("\\boxed{3.2 eV}", "B", W, choices=GPQA_CHOICES),
    Case("\\boxed{B}", "1.6 eV", C, choices=GPQA_CHOICES),  # reference given as option text
    Case("I am not sure.", "B", W),
    Case("The answer is a cat.", "A", W),  # "a" as an article is not a letter answer
    Case("\\boxed{\\text{(D)}}", "\\text{(D)}", C),
    Case("\\boxed{E}", "B", W, choices=["w", "x", "y", "z"]),  # E is not one of four options
    Case("\\boxed{A}", "maybe", U, answer_type="choice"),
    # ---- yes / no ---------------------------------------------------------------------------------------
    Case("yes", "Yes", C),
    Case("YES.", "yes", C),
    Case("\\boxed{\\text{No}}", "no", C),
    Case("No", "yes", W),
    Case("Yes, 17 is prime.", "yes", C),
    Case("The answer is no.", "No", C),
    Case("True", "yes", C),
    Case("false", "no", C),
    Case("\\boxed{True}", "True", C),
    Case("False", "True", W),
    Case("Maybe.", "yes", W),
    Case("yes and no", "yes", W),  # hedging picks neither
    Case("\\boxed{yes}", "maybe", U, answer_type="yesno"),
    # ---- short text -------------------------------------------------------------------------------------
    Case("\\boxed{Paris}", "Paris", C),
    Case("paris.", "Paris", C),
    Case("\\boxed{\\text{Paris}}", "Paris", C),
    Case("The answer is Paris.", "Paris", C),
    Case("  New   York ", "New York", C),
    Case("\\boxed{New York City}", "New York", W),
    Case("\\boxed{Rome}", "Paris", W),
    Case("\\boxed{sirap}", "Paris", W),
    Case("\\boxed{on}", "no", W, answer_type="text"),
    Case("\\boxed{tac}", "cat", W),
    Case("\\boxed{enots}", "stone", W),
    Case("\\boxed{stone}", "enots", W),
    Case("\\boxed{Wednesday}", "Wednesday", C),
    Case("\\boxed{\\textbf{Mice}}", "mice", C),
    Case('"Mice"', "mice", C),
    Case("\\boxed{Saturn's rings}", "saturn's rings", C),
    # prose is not a short answer: undecidable when detected, exact match when the row says text
    Case("\\boxed{yes}", "see the proof above, which uses the argument by contradiction", U),
    Case(
        "\\boxed{the powerhouse of the cell}",
        "The powerhouse of the cell.",
        C,
        answer_type="text",
    ),
    Case("\\boxed{3}", "the train arrives at 3 in the afternoon", U),  # prose with a number: not math
]
