"""Text normalisation shared by the judges: LaTeX text wrappers, case, whitespace, surrounding punctuation."""

from __future__ import annotations

import re
import unicodedata

# \text{x}, \textbf{x}, \mathrm{x}, ... -> x (innermost first, so nesting unwraps fully).
_TEXT_WRAPPER = re.compile(
    r"\\(?:text|textbf|textit|textrm|texttt|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}"
)
_SURROUNDING = " \t\n.,;:!?\"'`*_~()[]{}<>«»“”‘’"
_SPACES = re.compile(r"\s+")
_MATH_DELIMITERS = re.compile(r"^\$+|\$+$|^\\\(|\\\)$|^\\\[|\\\]$")
_ANSWER_PREFIX = re.compile(
    r"^(?:so\s+|thus\s+|therefore\s+|hence\s+)?(?:my\s+|the\s+)?(?:final\s+|correct\s+)?answer"
    r"(?:\s+is|\s*[:：=])\s*",
    re.IGNORECASE,
)
# Alphabetic runs of 2+ letters not preceded by a backslash (a LaTeX command is not a word).
_WORD_RUN = re.compile(r"(?<![\\A-Za-z])[^\W\d_]{2,}")

# Names that make a multi-letter run mathematical rather than a word.
_MATH_NAME_LIST = """sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln lg exp sqrt pi infty infinity inf
    oo mod gcd lcm max min det dim deg lim sum prod int frac dfrac tfrac cdot times div pm mp le ge leq geq
    ne neq approx to in notin cup cap emptyset varnothing circ degree degrees left right mathbb real
    reals"""
MATH_NAMES = frozenset(_MATH_NAME_LIST.split())


def unwrap_text(text: str) -> str:
    """Replace `\\text{x}`-style wrappers by their content and drop `$` / `\\(` delimiters."""
    previous = None
    while previous != text:
        previous = text
        text = _TEXT_WRAPPER.sub(r"\1", text)
    text = text.strip()
    while True:
        stripped = _MATH_DELIMITERS.sub("", text).strip()
        if stripped == text:
            return text
        text = stripped


def strip_answer_prefix(text: str) -> str:
    """'The answer is Paris.' -> 'Paris.' (leaves text without such a prefix alone)."""
    return _ANSWER_PREFIX.sub("", text.strip(), count=1)


def normalize_text(text: str) -> str:
    """Case-folded, NFKC, single-spaced, LaTeX text wrappers removed, surrounding punctuation stripped."""
    text = unicodedata.normalize("NFKC", unwrap_text(text))
    text = text.replace("\\ ", " ").replace("~", " ")
    text = _SPACES.sub(" ", text).casefold()
    return text.strip(_SURROUNDING)


def word_runs(text: str) -> list[str]:
    """Case-folded words of 2+ letters that are not LaTeX commands or math names (e.g. 'Paris', 'cm')."""
    runs = (run.casefold() for run in _WORD_RUN.findall(unwrap_text(text)))
    return [run for run in runs if run not in MATH_NAMES]
