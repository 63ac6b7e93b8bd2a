"""Errors and reject reasons shared by every stage, so messages always name the file and row."""

from __future__ import annotations

from dataclasses import dataclass

# Exit codes of the CLI (documented in docs/data_prep.md).
EXIT_OK = 0  # published (rows may have been rejected: the summary says how many and where they are)
EXIT_FATAL = 1  # nothing published: bad input, empty result, --strict stop, unusable output folder
EXIT_USAGE = 2
EXIT_REJECTED = 3  # published, but rows were rejected and --fail-on-rejects was given

# Reject reasons: the names that appear in rejects.jsonl and in the report.
MALFORMED_ROW = "malformed_row"
MISSING_FIELD = "missing_field"
MISSING_REASONING = "missing_reasoning"
UNCLOSED_REASONING = "unclosed_reasoning"
NESTED_REASONING = "nested_reasoning"
REPEATED_REASONING = "repeated_reasoning"
STRAY_REASONING_TAG = "stray_reasoning_tag"
TEXT_BEFORE_REASONING = "text_before_reasoning"
UNCLOSED_ANSWER = "unclosed_answer"
MALFORMED_ANSWER = "malformed_answer"
EMPTY_ANSWER = "empty_answer"
ANSWER_MISMATCH = "answer_mismatch"
TOO_LONG = "too_long"
DUPLICATE_EXACT = "duplicate_exact"
DUPLICATE_NEAR = "duplicate_near"
CONTAMINATED = "contaminated"
MISSING_REFERENCE = "missing_reference"
UNVERIFIABLE_REFERENCE = "unverifiable_reference"
# Preference pairs (build-pref).
EMPTY_RESPONSE = "empty_response"  # a side is missing or shows nothing
IDENTICAL_PAIR = "identical_pair"  # chosen and rejected say the same thing
LOW_SCORE_MARGIN = "low_score_margin"  # score_chosen - score_rejected below min_score_margin
NO_PAIR = "no_pair"  # on-policy samples of one prompt that give no better/worse pair (--from-samples)
# Not a row: a file could not be read to its end (the rows before the error were kept).
FILE_ERROR = "file_error"

# Reasons that mean the input itself is broken (``--strict`` stops on these).
BAD_INPUT_REASONS = frozenset({MALFORMED_ROW, MISSING_FIELD, FILE_ERROR})


class DataPrepError(Exception):
    """A fatal problem: the run stops with EXIT_FATAL."""


class UsageError(DataPrepError):
    """A bad flag, config value or format name: the run stops with EXIT_USAGE."""


@dataclass
class RowRejected(Exception):
    """Raised by readers and filters to drop one row with a named reason."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def where(path: str, row: int | None) -> str:
    """Human-readable location of a row: ``file:line`` (1-based) or the file alone."""
    return f"{path}:{row}" if row is not None else path
