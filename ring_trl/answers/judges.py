"""One judge per answer kind. Each reads the answer span (the last \\boxed{} or the text after </think>)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ring_trl.answers.kinds import (
    CHOICE,
    MATH,
    MATH_MAX_WORDS,
    NO_WORDS,
    NUMBER,
    SHORT_TEXT_MAX_WORDS,
    TEXT,
    YES_WORDS,
    YESNO,
    choice_letters,
    is_text_like,
    parse_number,
    reference_core,
)
from ring_trl.answers.math_runner import MathVerifier
from ring_trl.answers.normalize import normalize_text, strip_answer_prefix, unwrap_text, word_runs

CORRECT, WRONG, UNDECIDABLE = "correct", "wrong", "undecidable"
VERDICTS = (CORRECT, WRONG, UNDECIDABLE)

Choices = Sequence[str] | Mapping[str, str] | None


@dataclass(frozen=True)
class Judgement:
    """A verdict with what was read. `vote` groups equivalent answers for majority voting."""

    verdict: str
    kind: str
    extracted: str | None
    reason: str
    vote: str | None = None

    @property
    def correct(self) -> bool:
        return self.verdict == CORRECT

    @property
    def undecidable(self) -> bool:
        return self.verdict == UNDECIDABLE


def _verdict(ok: bool) -> str:
    return CORRECT if ok else WRONG


# ----------------------------------------------------------------------------------------------- choice
_LETTER_LIST = r"\(?([A-Za-z])\)?(?:\s*(?:,|&|\band\b)\s*\(?[A-Za-z]\)?)*"
_WHOLE_LETTERS = re.compile(rf"^(?:option\s+|choice\s+)?{_LETTER_LIST}[.):]?$", re.IGNORECASE)
_SAID_LETTERS = re.compile(
    r"answer\s*(?:is|:|=)\s*(?:option\s+|choice\s+)?\**\s*"
    r"(\(?[A-Za-z]\)?(?:\s*(?:,|&|\band\b)\s*\(?[A-Za-z]\)?)*)(?=\s*(?:$|[.,;!*)\]\n]))",
    re.IGNORECASE,
)
_LEADING_LETTER = re.compile(r"^(?:\(([A-Za-z])\)|([A-Z])[.)])(?:\s|$)")
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")


def choice_table(choices: Choices) -> dict[str, str]:
    """{'A': 'first option', ...} from a list (in letter order) or a letter -> text mapping."""
    if not choices:
        return {}
    if isinstance(choices, Mapping):
        return {str(k).strip().upper(): str(v) for k, v in choices.items()}
    return {chr(ord("A") + i): str(text) for i, text in enumerate(choices)}


def _letters_in(text: str, allowed: str) -> frozenset[str] | None:
    letters = frozenset(
        ch.upper() for ch in re.findall(r"[A-Za-z]", re.sub(r"\band\b", ",", text, flags=re.I))
    )
    if not letters or any(letter not in allowed for letter in letters):
        return None
    return letters


def read_choice(span: str, table: Mapping[str, str]) -> frozenset[str] | None:
    """The letters a final answer picks, or None when it picks none."""
    allowed = "".join(sorted(table)) if table else "ABCDEFGHIJ"
    text = strip_answer_prefix(unwrap_text(span)).strip().strip("*").strip()
    if _WHOLE_LETTERS.match(text):
        return _letters_in(re.sub(r"^(?:option|choice)\s+", "", text, flags=re.I), allowed)
    said = _SAID_LETTERS.findall(span)
    if said:
        return _letters_in(said[-1], allowed)
    leading = _LEADING_LETTER.match(text)
    if leading:
        return _letters_in(leading.group(1) or leading.group(2), allowed)
    if table:
        wanted = normalize_text(text)
        hits = [letter for letter, option in table.items() if normalize_text(option) == wanted]
        if len(hits) == 1:
            return frozenset(hits)
    in_parentheses = set(_PAREN_LETTER.findall(text))
    if len(in_parentheses) == 1:
        return _letters_in(in_parentheses.pop(), allowed)
    return None


def reference_choice(reference: str, table: Mapping[str, str]) -> frozenset[str] | None:
    letters = choice_letters(reference)
    if letters is not None:
        return letters
    if table:
        wanted = normalize_text(reference_core(reference))
        hits = [letter for letter, option in table.items() if normalize_text(option) == wanted]
        if len(hits) == 1:
            return frozenset(hits)
    return None


def judge_choice(span: str, reference: str, choices: Choices) -> Judgement:
    table = choice_table(choices)
    expected = reference_choice(reference, table)
    if expected is None:
        return Judgement(UNDECIDABLE, CHOICE, None, "unparsable_reference")
    picked = read_choice(span, table)
    if picked is None:
        return Judgement(WRONG, CHOICE, None, "no_choice_found")
    letters = ",".join(sorted(picked))
    return Judgement(_verdict(picked == expected), CHOICE, letters, "compared_letters", letters)


# ----------------------------------------------------------------------------------------------- yes/no
_FIRST_WORD = re.compile(r"^(yes|no|true|false)\s*(?:$|[,.;:!\-—])")
_SAID_YESNO = re.compile(r"answer\s*(?:is|:|=)\s*\**\s*(yes|no|true|false)\b", re.IGNORECASE)


def polarity(word: str) -> str | None:
    word = normalize_text(word)
    return "yes" if word in YES_WORDS else "no" if word in NO_WORDS else None


def read_yesno(span: str) -> str | None:
    """'yes' or 'no' (true/false count as yes/no), or None when the answer says neither clearly."""
    text = normalize_text(strip_answer_prefix(unwrap_text(span)))
    said = polarity(text)
    if said is not None:
        return said
    first = _FIRST_WORD.match(text)
    if first:
        return polarity(first.group(1))
    found = _SAID_YESNO.findall(span)
    return polarity(found[-1]) if found else None


def judge_yesno(span: str, reference: str) -> Judgement:
    expected = polarity(reference_core(reference))
    if expected is None:
        return Judgement(UNDECIDABLE, YESNO, None, "unparsable_reference")
    said = read_yesno(span)
    if said is None:
        return Judgement(WRONG, YESNO, None, "no_yes_or_no_found")
    return Judgement(_verdict(said == expected), YESNO, said, "compared_polarity", said)


# ------------------------------------------------------------------------------------------------- text
def text_reference_problem(reference: str, explicit: bool) -> str | None:
    """Why a text reference cannot be judged (empty; detected prose rather than a short answer), else None."""
    expected = normalize_text(reference_core(reference))
    if not expected:
        return "unparsable_reference"
    if not explicit and len(expected.split()) > SHORT_TEXT_MAX_WORDS:
        return "reference_not_short_text"
    return None


def judge_text(span: str, reference: str, explicit: bool = False) -> Judgement:
    """Exact match after normalisation; `explicit`: the row said answer_type text (any length is judged)."""
    problem = text_reference_problem(reference, explicit)
    if problem is not None:
        return Judgement(UNDECIDABLE, TEXT, None, problem)
    expected = normalize_text(reference_core(reference))
    said = normalize_text(strip_answer_prefix(unwrap_text(span)))
    if not said:
        return Judgement(WRONG, TEXT, None, "empty_answer")
    return Judgement(_verdict(said == expected), TEXT, said, "compared_text", said)


# ----------------------------------------------------------------------------------------- number / math
def _fraction_text(value) -> str:  # type: ignore[no-untyped-def]
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def judge_number(span: str, reference: str, boxed: bool, verifier: MathVerifier) -> Judgement:
    """Plain numbers compare exactly as rationals; anything else ('x = 7', '\\sqrt{4}') goes to math-verify."""
    expected = parse_number(reference_core(reference))
    if expected is None:
        return judge_math(span, reference, boxed, verifier, kind=NUMBER)
    said = parse_number(strip_answer_prefix(span))
    if said is not None:
        text = _fraction_text(said)
        return Judgement(_verdict(said == expected), NUMBER, text, "compared_numbers", text)
    if is_text_like(unwrap_text(strip_answer_prefix(span)).strip(" .")):
        return Judgement(WRONG, NUMBER, normalize_text(span), "no_number_found")
    return judge_math(span, reference, boxed, verifier, kind=NUMBER)


def math_reference_problem(reference: str) -> str | None:
    """Why a math reference cannot be judged before math-verify sees it (empty, prose), else None."""
    core = reference_core(reference)
    if not core:
        return "unparsable_reference"
    if len(word_runs(core)) > MATH_MAX_WORDS:
        return "reference_is_prose"
    return None


def judge_math(span: str, reference: str, boxed: bool, verifier: MathVerifier, kind: str = MATH) -> Judgement:
    """math-verify, except that words never compare as products of symbols (`Sirap` is not `Paris`)."""
    problem = math_reference_problem(reference)
    if problem is not None:
        return Judgement(UNDECIDABLE, kind, None, problem)
    expected_words = word_runs(reference_core(reference))
    said_words = word_runs(span)
    if expected_words and said_words and expected_words != said_words:
        return Judgement(WRONG, kind, span.strip(), "words_differ", normalize_text(span))
    candidate = f"\\boxed{{{span}}}" if boxed else span
    result = verifier.verify(candidate, reference)
    if result.verdict is None:
        return Judgement(UNDECIDABLE, kind, result.extracted, result.reason, result.key)
    if result.extracted is None:
        return Judgement(WRONG, kind, None, result.reason)
    return Judgement(_verdict(result.verdict), kind, result.extracted, result.reason, result.key)


__all__ = [
    "CORRECT",
    "UNDECIDABLE",
    "VERDICTS",
    "WRONG",
    "Judgement",
    "choice_table",
    "judge_choice",
    "judge_math",
    "judge_number",
    "judge_text",
    "judge_yesno",
    "math_reference_problem",
    "read_choice",
    "read_yesno",
    "reference_choice",
    "text_reference_problem",
]
