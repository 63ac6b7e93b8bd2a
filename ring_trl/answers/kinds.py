"""Answer kinds and how a reference answer says which kind it is.

A row may name its kind (`answer_type`); otherwise the reference decides, conservatively: words go to the
exact text judge, never to math-verify, which reads a word as a product of one-letter symbols (so `Sirap`
would "equal" `Paris`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from ring_trl.answers.extract import last_boxed
from ring_trl.answers.normalize import normalize_text, unwrap_text, word_runs

MATH, CHOICE, YESNO, TEXT, NUMBER = "math", "choice", "yesno", "text", "number"
KINDS = (MATH, CHOICE, YESNO, TEXT, NUMBER)

# Detected text references longer than this are prose (a proof, an explanation), not a short answer; a row
# that says answer_type: text is judged by exact match whatever its length.
SHORT_TEXT_MAX_WORDS = 5
# A math reference with more words than this is prose too (math-verify would read it as symbol products).
MATH_MAX_WORDS = 3

YES_WORDS = frozenset({"yes", "true"})
NO_WORDS = frozenset({"no", "false"})

_CHOICE_REFERENCE = re.compile(r"^\(?([A-J])\)?(?:\s*(?:,|&|and)\s*\(?([A-J])\)?)*$")
_MATH_SIGNS = re.compile(r"[\d\\^_=+*/<>|{}]")
_TEXT_CHARS = re.compile(r"^[^\W\d_]+(?:[\s'’\-.,&][^\W\d_]*)*\.?$")

_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_DECIMAL = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)$")
_SLASH_FRACTION = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_LATEX_FRACTION = re.compile(r"^([-+]?)\\[dt]?frac\s*\{\s*([-+]?\d+)\s*\}\s*\{\s*(\d+)\s*\}$")


class AnswerTypeError(ValueError):
    """A row names an answer_type this checker does not know."""


def reference_core(reference: str) -> str:
    """The reference without a `\\boxed{}` / `$` / `\\text{}` wrapper around it."""
    text = reference.strip()
    boxed = last_boxed(text)
    if boxed is not None and text.startswith(("\\boxed", "$\\boxed", "\\fbox")):
        text = boxed
    return unwrap_text(text)


def parse_number(text: str) -> Fraction | None:
    """An exact rational for a plain number ('1,000', '-0.25', '3/4', '\\frac{3}{4}'), else None."""
    core = unwrap_text(text).replace("{,}", "").replace("\\,", "").replace("\\!", "").strip()
    core = core[:-1] if core.endswith(".") else core
    if _THOUSANDS.match(core):
        core = core.replace(",", "")
    if _DECIMAL.match(core):
        return Fraction(core)
    slash = _SLASH_FRACTION.match(core)
    latex = _LATEX_FRACTION.match(core)
    if slash:
        numerator, denominator = int(slash.group(1)), int(slash.group(2))
    elif latex:
        numerator, denominator = int(latex.group(2)), int(latex.group(3))
        numerator = -numerator if latex.group(1) == "-" else numerator
    else:
        return None
    return Fraction(numerator, denominator) if denominator else None


def is_text_like(core: str) -> bool:
    """Words (letters, spaces, hyphens, apostrophes) with at least one word that is not a math name."""
    if _MATH_SIGNS.search(core) or not _TEXT_CHARS.match(core):
        return False
    return bool(word_runs(core))


def choice_letters(reference: str) -> frozenset[str] | None:
    """{'A'} for 'A' / '(A)', {'A', 'C'} for 'A,C' / 'A and C'; None when the reference is not letters."""
    core = reference_core(reference).strip().rstrip(".")
    if not _CHOICE_REFERENCE.match(core):
        return None
    return frozenset(re.findall(r"[A-J]", core))


def detect_kind(reference: str, choices: Sequence[str] | Mapping[str, str] | None = None) -> str:
    """The kind a reference answer asks for (see docs/eval.md for the rules)."""
    if choices:
        return CHOICE
    core = reference_core(reference)
    lowered = normalize_text(core)
    if lowered in YES_WORDS or lowered in NO_WORDS:
        return YESNO
    if choice_letters(reference) is not None:
        return CHOICE
    if parse_number(core) is not None:
        return NUMBER
    if is_text_like(core):
        return TEXT
    return MATH


def resolve_kind(
    reference: str, answer_type: Any = None, choices: Sequence[str] | Mapping[str, str] | None = None
) -> str:
    """The row's own answer_type when it has one (validated), else the detected kind."""
    if answer_type is None or (isinstance(answer_type, str) and not answer_type.strip()):
        return detect_kind(reference, choices)
    kind = str(answer_type).strip().lower()
    if kind not in KINDS:
        raise AnswerTypeError(f"answer_type {answer_type!r} is not one of {', '.join(KINDS)}")
    return kind
