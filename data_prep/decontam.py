"""Benchmark decontamination by word n-gram overlap against the benchmark files the user passes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from data_prep.errors import DataPrepError
from data_prep.sources import iter_rows
from data_prep.textkeys import normalize_words

_TEXT_FIELDS = ("problem", "question", "prompt", "input", "query", "instruction", "text")
_ANSWER_FIELDS = ("answer", "solution", "output", "target")


def benchmark_texts(paths: Iterable[str]) -> list[str]:
    """Prompt and answer texts of every benchmark row (.txt: one prompt per line)."""
    texts: list[str] = []
    for path in paths:
        p = Path(path)
        if p.suffix == ".txt":
            try:
                texts.extend(
                    line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()
                )
            except (OSError, UnicodeDecodeError) as err:
                raise DataPrepError(f"{p}: cannot read benchmark file: {err}") from err
            continue
        for raw in iter_rows(p):
            if raw.data is None:
                raise DataPrepError(f"{raw.location}: bad benchmark row: {raw.error}")
            found = False
            for key in (*_TEXT_FIELDS, *_ANSWER_FIELDS):
                value = raw.data.get(key)
                if isinstance(value, str) and value.strip():
                    texts.append(value)
                    found = key in _TEXT_FIELDS or found
            if not found:
                raise DataPrepError(
                    f"{raw.location}: benchmark row has none of the fields {', '.join(_TEXT_FIELDS)}"
                )
    return texts


class Decontaminator:
    """Hashed n-gram set of the benchmarks. Uses Python's own hash: build it in the process that checks."""

    def __init__(self, texts: Iterable[str], n: int = 8) -> None:
        self.n = n
        self._grams: set[int] = set()
        self._short: set[int] = set()  # whole benchmark texts shorter than n words
        for text in texts:
            words = normalize_words(text)
            if len(words) < n:
                if words:
                    self._short.add(hash(" ".join(words)))
                continue
            self._grams.update(self._hashes(words))

    def _hashes(self, words: list[str]) -> Iterable[int]:
        n = self.n
        return (hash(" ".join(words[i : i + n])) for i in range(len(words) - n + 1))

    def __bool__(self) -> bool:
        return bool(self._grams or self._short)

    def overlap(self, text: str) -> str | None:
        """The first benchmark n-gram found in `text` (as text, for the reject detail), or None."""
        words = normalize_words(text)
        if self._short and hash(" ".join(words)) in self._short:
            return " ".join(words)
        grams = self._grams
        if not grams or len(words) < self.n:
            return None
        for i in range(len(words) - self.n + 1):
            gram = " ".join(words[i : i + self.n])
            if hash(gram) in grams:
                return gram
        return None
