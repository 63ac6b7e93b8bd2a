"""Errors and reject reasons shared by every stage, so messages always name the file and row."""

from __future__ import annotations

from dataclasses import dataclass

# Exit codes of the CLI (documented in docs/data_prep.md).
EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3

# Reject reasons: the names that appear in rejects.jsonl and in the report.
MALFORMED_ROW = "malformed_row"
MISSING_FIELD = "missing_field"
MISSING_REASONING = "missing_reasoning"
UNCLOSED_REASONING = "unclosed_reasoning"
UNCLOSED_ANSWER = "unclosed_answer"
EMPTY_ANSWER = "empty_answer"
ANSWER_MISMATCH = "answer_mismatch"
TOO_LONG = "too_long"
DUPLICATE_EXACT = "duplicate_exact"
DUPLICATE_NEAR = "duplicate_near"
CONTAMINATED = "contaminated"
MISSING_REFERENCE = "missing_reference"
UNVERIFIABLE_REFERENCE = "unverifiable_reference"

# Reasons that mean the input itself is broken (``--strict`` stops on these).
BAD_INPUT_REASONS = frozenset({MALFORMED_ROW, MISSING_FIELD})


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
