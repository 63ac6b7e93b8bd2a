"""Per-row work (read schema, filter, measure, fingerprint), run in worker processes, batch by batch."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep import errors as E
from data_prep.decontam import Decontaminator
from data_prep.errors import RowRejected
from data_prep.formats import READERS, Example, prompt_only
from data_prep.reasoning import canonical_content, check_no_think_tags
from data_prep.sources import RawRow
from data_prep.textkeys import MinHasher, exact_key, is_blank, normalize_words
from data_prep.tokens import TokenCounter, render_for_length


@dataclass
class RowSettings:
    """What a worker needs to know (picklable)."""

    kind: str  # "sft" or "rlvr"
    tokenizer: str | None
    cutoff_len: int
    verify_answers: bool
    verify_timeout_s: int
    benchmark_texts: list[str]
    decontam_ngram: int
    decontaminate_answer: bool
    exact_dedup: bool
    near_dedup: bool
    minhash_num_perm: int
    minhash_ngram: int
    dedup_on: str
    default_task: str
    thinking: str = "keep"  # build-pref: keep | strip | require the responses' reasoning blocks
    min_score_margin: float | None = None  # build-pref: drop pairs whose score margin is smaller


@dataclass
class Rejected:
    reason: str
    detail: str
    file: str
    position: int
    unit: str
    row: Any
    length: int | None = None


@dataclass
class Candidate:
    """A row that passed the per-row filters; dedup against earlier rows happens in the main process."""

    record_id: str
    line: str  # the output JSONL line, serialised in the worker
    length: int | None
    exact: bytes | None
    signature: np.ndarray | None
    file: str
    position: int
    unit: str
    verify_undecided: bool = False


def _rejected(rejection: RowRejected, raw: RawRow, length: int | None = None) -> Rejected:
    row = raw.data if raw.data is not None else raw.raw_text
    return Rejected(rejection.reason, rejection.detail, raw.file, raw.position, raw.unit, row, length)


class RowProcessor:
    """Turns raw rows of one source into Candidates or Rejected, keeping input order."""

    def __init__(self, settings: RowSettings) -> None:
        self.settings = settings
        self.counter = TokenCounter(settings.tokenizer) if settings.tokenizer else None
        self.decontam = Decontaminator(settings.benchmark_texts, settings.decontam_ngram)
        self.minhasher = (
            MinHasher(settings.minhash_num_perm, settings.minhash_ngram) if settings.near_dedup else None
        )
        self.stage_seconds: Counter[str] = Counter()

    # -- public ---------------------------------------------------------------------------------------

    def process(self, source: str, fmt: str, rows: list[RawRow]) -> list[Candidate | Rejected]:
        build = {"sft": self._sft, "rlvr": self._rlvr, "pref": self._pref}[self.settings.kind]
        out: list[Candidate | Rejected | None] = [None] * len(rows)
        # index, record, text(s) to measure (a pair has two: its length is the longer one), key text
        pending: list[tuple[int, dict[str, Any], str | tuple[str, ...], str]] = []
        with self._timed("convert_and_decontaminate"):
            for i, raw in enumerate(rows):
                try:
                    if raw.error is not None:
                        raise raw.error
                    record, measure_text, key_text, answer = build(source, fmt, raw)
                    for text in (measure_text,) if isinstance(measure_text, str) else measure_text:
                        self._check_provably_too_long(text)
                    self._check_contamination(record, answer)
                    pending.append((i, record, measure_text, key_text))
                except RowRejected as rejection:
                    out[i] = _rejected(rejection, raw)
        with self._timed("tokenize"):
            lengths = self._lengths([p[2] for p in pending])
        survivors: list[tuple[int, dict[str, Any], int | None, list[str], bool]] = []
        with self._timed("verify"):
            for (i, record, _, key_text), length in zip(pending, lengths, strict=True):
                raw = rows[i]
                try:
                    if length is not None and length > self.settings.cutoff_len:
                        raise RowRejected(
                            E.TOO_LONG, f"{length} tokens > cutoff_len {self.settings.cutoff_len}"
                        )
                    undecided = self._verify(record)
                except RowRejected as rejection:
                    out[i] = _rejected(rejection, raw, length)
                    continue
                survivors.append((i, record, length, normalize_words(key_text), undecided))
        with self._timed("fingerprint"):
            signatures = (
                self.minhasher.signatures([s[3] for s in survivors])
                if self.minhasher is not None
                else [None] * len(survivors)
            )
            for (i, record, length, words, undecided), signature in zip(survivors, signatures, strict=True):
                raw = rows[i]
                key = exact_key(words) if self.settings.exact_dedup else None
                out[i] = Candidate(
                    record["id"],
                    dump_line(record),
                    length,
                    key,
                    signature,
                    raw.file,
                    raw.position,
                    raw.unit,
                    undecided,
                )
        return [o for o in out if o is not None]

    @contextlib.contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[stage] += time.perf_counter() - start

    def _lengths(self, measures: list[str | tuple[str, ...]]) -> list[int | None]:
        """Token counts in one batch call; a row with several texts counts as its longest."""
        if self.counter is None:
            return [None] * len(measures)
        groups = [(m,) if isinstance(m, str) else m for m in measures]
        counts = iter(self.counter.count([text for group in groups for text in group]))
        return [max(next(counts) for _ in group) for group in groups]

    def take_timings(self) -> dict[str, float]:
        """Seconds per stage since the last call (workers report them with each batch)."""
        timings, self.stage_seconds = dict(self.stage_seconds), Counter()
        return timings

    # -- SFT ------------------------------------------------------------------------------------------

    def _sft(self, source: str, fmt: str, raw: RawRow) -> tuple[dict[str, Any], str, str, str]:
        example = READERS[fmt](raw.data or {})
        if example.reasoning is None:
            raise RowRejected(E.MISSING_REASONING, "the row has no reasoning trace")
        reasoning = example.reasoning.strip()
        if is_blank(reasoning):
            raise RowRejected(E.MISSING_REASONING, "the reasoning trace is empty")
        answer = (example.answer or "").strip()
        if is_blank(answer):
            raise RowRejected(E.EMPTY_ANSWER, "nothing visible after the reasoning block")
        check_no_think_tags(reasoning, answer)
        messages = [*example.prompt, {"role": "assistant", "content": canonical_content(reasoning, answer)}]
        record: dict[str, Any] = {
            "id": _row_id(source, example.raw_id, raw),
            "source": source,
            "messages": messages,
        }
        if example.reference_answer:
            record["reference_answer"] = example.reference_answer
        prompt_text = _prompt_text(example)
        key_text = prompt_text if self.settings.dedup_on == "prompt" else f"{prompt_text}\n{answer}"
        return record, render_for_length(messages), key_text, answer

    def _verify(self, record: dict[str, Any]) -> bool:
        """SFT: reject a wrong final answer. RLVR: reject a reference no answer reward could use. True = undecided.

        Both go through ring_trl.answers, the checker the GRPO rewards and the evaluator use, so a row kept
        here is judged the same way later.
        """
        if not self.settings.verify_answers:
            return False
        from ring_trl.answers import check, default_math_verifier, reference_status

        verifier = default_math_verifier(self.settings.verify_timeout_s)
        if self.settings.kind == "rlvr":
            if record["task"] != "math":
                return False
            status = reference_status(record["answer"], verifier=verifier)
            if status.status == "unparsable":
                raise RowRejected(
                    E.UNVERIFIABLE_REFERENCE,
                    f"no {status.kind} answer can be checked against {record['answer'][:80]!r} ({status.detail})",
                )
            return status.status == "undecidable"
        reference = record.get("reference_answer")
        if not reference:
            return False
        judgement = check(record["messages"][-1]["content"], reference, verifier=verifier)
        if judgement.verdict == "wrong":
            raise RowRejected(
                E.ANSWER_MISMATCH,
                f"{judgement.kind} answer {str(judgement.extracted)[:60]!r} does not match reference "
                f"{reference[:80]!r} ({judgement.reason})",
            )
        return judgement.undecidable

    # -- RLVR -----------------------------------------------------------------------------------------

    def _rlvr(self, source: str, fmt: str, raw: RawRow) -> tuple[dict[str, Any], str, str, str]:
        example = prompt_only(fmt, raw.data or {})
        prompt = [m for m in example.prompt if m["role"] in ("system", "user")]
        if not any(m["role"] == "user" and not is_blank(m["content"]) for m in prompt):
            raise RowRejected(E.MISSING_FIELD, "no user prompt")
        task = example.task if example.task in ("math", "code") else None
        task = task or ("code" if example.tests else self.settings.default_task)
        reference = (example.reference_answer or "").strip()
        if is_blank(reference):
            reference = ""
        if task == "math" and not reference:
            raise RowRejected(E.MISSING_REFERENCE, "no reference answer to reward against")
        if task == "code" and not example.tests:
            raise RowRejected(E.MISSING_REFERENCE, "code prompt without tests")
        record: dict[str, Any] = {
            "id": _row_id(source, example.raw_id, raw),
            "source": source,
            "prompt": prompt,
            "answer": reference,
            "task": task,
        }
        if example.tests:
            record["tests"] = example.tests
        return record, render_for_length(prompt), _prompt_text(example), reference

    # -- preference pairs -----------------------------------------------------------------------------

    def _pref(self, source: str, fmt: str, raw: RawRow) -> tuple[dict[str, Any], tuple[str, str], str, str]:
        from data_prep.preference import pair_record

        settings = self.settings
        record, measure, key_text, answer, raw_id = pair_record(
            fmt, raw.data or {}, settings.thinking, settings.min_score_margin, settings.dedup_on
        )
        return {"id": _row_id(source, raw_id, raw), "source": source, **record}, measure, key_text, answer

    # -- shared ---------------------------------------------------------------------------------------

    def _check_provably_too_long(self, text: str) -> None:
        """Drop a row whose size alone proves it too long, before decontamination and tokenization see it."""
        if self.counter is None:
            return
        cutoff = self.settings.cutoff_len
        bound = self.counter.min_tokens_if_over(text, cutoff)
        if bound is not None:
            raise RowRejected(
                E.TOO_LONG,
                f"{len(text)} characters: at least {bound} tokens > cutoff_len {cutoff} (not tokenized)",
            )

    def _check_contamination(self, record: dict[str, Any], answer: str) -> None:
        if not self.decontam:
            return
        messages = record.get("prompt") or record["messages"][:-1]
        prompt = "\n".join(m["content"] for m in messages if m["role"] == "user")
        hit = self.decontam.overlap(prompt)
        where = "prompt"
        if hit is None and self.settings.decontaminate_answer and answer:
            hit, where = self.decontam.overlap(answer), "answer"
        if hit is not None:
            raise RowRejected(
                E.CONTAMINATED, f"{where} shares a {self.decontam.n}-gram with a benchmark: {hit!r}"
            )


def _prompt_text(example: Example) -> str:
    return "\n".join(m["content"] for m in example.prompt if m["role"] == "user")


def _row_id(source: str, raw_id: str | None, raw: RawRow) -> str:
    return f"{source}/{raw_id}" if raw_id else f"{source}/{Path(raw.file).name}:{raw.position}"


def dump_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"
