"""The build: stream every input through worker processes, dedup in order, mix, split, publish atomically."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import random
import signal
import threading
import time
from array import array
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from data_prep import errors as E
from data_prep.config import BuildConfig, SourceConfig
from data_prep.decontam import benchmark_texts
from data_prep.errors import DataPrepError, UsageError
from data_prep.formats import detect_format
from data_prep.outputs import DatasetWriter, sharegpt_info_entry
from data_prep.pref_formats import SAMPLES_FORMAT, detect_pref_format
from data_prep.report import RunStats, build_report, plot_lengths, render_markdown
from data_prep.rows import Candidate, Rejected, RowProcessor, RowSettings
from data_prep.sources import RawRow, iter_rows
from data_prep.tokens import resolve_tokenizer_path

log = logging.getLogger("data_prep")

_worker: RowProcessor | None = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive the build (kill -9 of the build included): on Linux the kernel sends it
    SIGKILL when the parent dies; elsewhere a watchdog thread notices the parent is gone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError):

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="data_prep-parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the line above ran
        os._exit(1)


def _init_worker(settings: RowSettings, parent_pid: int) -> None:
    global _worker
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it shuts the pool down
    _worker = RowProcessor(settings)


def _work(source: str, fmt: str, rows: list[RawRow]) -> tuple[list[Candidate | Rejected], dict[str, float]]:
    assert _worker is not None
    results = _worker.process(source, fmt, rows)
    return results, _worker.take_timings()


@dataclass
class BuildResult:
    report: dict[str, Any]
    exit_code: int
    out_dir: Path


class _Spool:
    """Rows that passed every filter, one temp JSONL per source, with byte offsets for random access."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[bytes] = open(path, "wb")  # noqa: SIM115 - open for the whole stream; closed by the build
        self.offsets = array("q")
        self.lengths = array("q")

    def add(self, line: str, length: int | None) -> None:
        self.offsets.append(self.handle.tell())
        self.lengths.append(-1 if length is None else length)
        self.handle.write(line.encode("utf-8"))

    def __len__(self) -> int:
        return len(self.offsets)


class _Deduper:
    """Exact and MinHash-LSH near-duplicate detection; the first occurrence (in input order) wins."""

    def __init__(self, config: BuildConfig) -> None:
        self.exact: dict[bytes, str] = {}
        self.lsh_ids: list[str] = []
        self.lsh = None
        if config.near_dedup:
            from datasketch import MinHashLSH

            from data_prep.textkeys import MinHasher

            self.minhasher = MinHasher(config.minhash_num_perm, config.minhash_ngram)
            self.threshold = config.near_dedup_threshold
            self.signatures: list[np.ndarray] = []  # by LSH key, to confirm candidates by estimated Jaccard
            try:
                self.lsh = MinHashLSH(threshold=config.near_dedup_threshold, num_perm=config.minhash_num_perm)
            except ValueError as err:
                raise UsageError(
                    f"near_dedup_threshold {config.near_dedup_threshold} with minhash_num_perm "
                    f"{config.minhash_num_perm}: {err} (lower the threshold or raise num_perm)"
                ) from err

    def check(self, candidate: Candidate) -> tuple[str, str] | None:
        record_id = candidate.record_id
        if candidate.exact is not None:
            first = self.exact.get(candidate.exact)
            if first is not None:
                return E.DUPLICATE_EXACT, f"same normalised text as {first}"
        if self.lsh is not None and candidate.signature is not None:
            minhash = self.minhasher.from_signature(candidate.signature)
            for key in sorted(self.lsh.query(minhash)):
                similarity = float(np.mean(self.signatures[key] == candidate.signature))
                if similarity >= self.threshold:
                    return (
                        E.DUPLICATE_NEAR,
                        f"near-duplicate of {self.lsh_ids[key]} (estimated Jaccard {similarity:.2f})",
                    )
            self.lsh.insert(len(self.signatures), minhash, check_duplication=False)
            self.signatures.append(candidate.signature)
            self.lsh_ids.append(record_id)
        if candidate.exact is not None:
            self.exact[candidate.exact] = record_id
        return None


class Build:
    """One build-sft, build-rlvr or build-pref run."""

    def __init__(self, config: BuildConfig, kind: str) -> None:
        self.config = config
        self.kind = kind
        self.stats = RunStats()

    # -- orchestration --------------------------------------------------------------------------------

    def run(self) -> BuildResult:
        config = self.config
        if config.kind is not None and config.kind != self.kind:
            raise UsageError(f"this config is for build-{config.kind}, not build-{self.kind}")
        tokenizer = str(resolve_tokenizer_path(config.tokenizer)) if config.cutoff_len > 0 else None
        settings = RowSettings(
            kind=self.kind,
            tokenizer=tokenizer,
            cutoff_len=config.cutoff_len,
            verify_answers=config.verify_answers,
            verify_timeout_s=config.verify_timeout_s,
            benchmark_texts=benchmark_texts(config.benchmarks),
            decontam_ngram=config.decontam_ngram,
            decontaminate_answer=config.decontaminate_answer,
            exact_dedup=config.exact_dedup,
            near_dedup=config.near_dedup,
            minhash_num_perm=config.minhash_num_perm,
            minhash_ngram=config.minhash_ngram,
            dedup_on=config.pair_dedup if self.kind == "pref" else config.dedup_on,
            default_task=config.default_task,
            thinking=config.thinking,
            min_score_margin=config.min_score_margin,
        )
        writer = DatasetWriter(config.output_dir, config.dataset_name)
        try:
            return self._run(settings, writer)
        finally:
            writer.discard()

    def _run(self, settings: RowSettings, writer: DatasetWriter) -> BuildResult:
        config, name = self.config, self.config.dataset_name
        rejects_name = f"{name}.rejects.jsonl"
        started = time.perf_counter()
        spools: list[_Spool] = []
        with open(writer.path(rejects_name), "w", encoding="utf-8") as rejects:
            deduper = _Deduper(config)
            with _executor(config, settings) as submit:
                for index, source in enumerate(config.inputs):
                    spool = _Spool(writer.path(f".spool-{index}.jsonl"))
                    spools.append(spool)
                    with spool.handle:
                        self._stream_source(source, submit, deduper, spool, rejects)
        self.stats.stage_seconds["filter_and_dedup"] = time.perf_counter() - started

        mixed = time.perf_counter()
        train, val = self._select(spools)
        if not train:
            raise DataPrepError(self._nothing_to_publish(val))
        files = [f"{name}.jsonl", rejects_name]
        self._write_rows(spools, train, writer.path(files[0]))
        if val:
            files.append(f"{name}_val.jsonl")
            self._write_rows(spools, val, writer.path(files[-1]))
        self.stats.stage_seconds["mix_and_write"] = time.perf_counter() - mixed
        self.stats.stage_seconds["total"] = time.perf_counter() - started

        outputs = {"train_rows": len(train), "val_rows": len(val)}
        report = build_report(self.stats, self.kind, name, config.cutoff_len, outputs)
        (writer.path(f"{name}.report.json")).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (writer.path(f"{name}.report.md")).write_text(render_markdown(report), encoding="utf-8")
        plot_lengths(
            self.stats.measured_lengths,
            config.cutoff_len,
            writer.path(f"{name}.lengths.png"),
            name,
            unmeasured_over=self.stats.unmeasured_too_long,
        )
        files += [f"{name}.report.json", f"{name}.report.md", f"{name}.lengths.png"]
        entries = {name: self._info_entry(f"{name}.jsonl")}
        if val:
            entries[f"{name}_val"] = self._info_entry(f"{name}_val.jsonl")
        writer.publish(
            files,
            entries,
            {
                "kind": self.kind,
                **outputs,
                "rows_rejected": report["rows_rejected"],
                "file_errors": len(report["file_errors"]),
            },
        )
        problems = report["rows_rejected"] + len(report["file_errors"])
        code = E.EXIT_REJECTED if problems and config.fail_on_rejects else E.EXIT_OK
        return BuildResult(report, code, Path(config.output_dir))

    def _nothing_to_publish(self, val: list[tuple[int, int]]) -> str:
        """The one-line reason an empty dataset is not published (the previous one stays as it was)."""
        config, stats = self.config, self.stats
        kept = f"nothing was published; {Path(config.output_dir) / config.dataset_name}.* is unchanged"
        read = sum(s.read for s in stats.sources.values())
        files = "; ".join(f"{e['file']}: {e['detail']}" for e in stats.file_errors)
        if val:
            return (
                f"no training rows: all {len(val)} kept rows went to the validation split "
                f"(val_size {config.val_size}); {kept}"
            )
        if read == 0:
            inputs = ", ".join(s.path for s in config.inputs)
            return f"no rows read from {inputs}" + (f" ({files})" if files else "") + f"; {kept}"
        per_reason = Counter[str]()
        for source in stats.sources.values():
            per_reason.update(source.rejected)
        reasons = ", ".join(f"{reason} {count}" for reason, count in per_reason.most_common())
        first = f"; first: {stats.first_reject}" if stats.first_reject else ""
        return f"all {read} rows were rejected ({reasons}){first}; {kept}"

    # -- stage 1: stream, filter, dedup ---------------------------------------------------------------

    def _stream_source(
        self, source: SourceConfig, submit, deduper: _Deduper, spool: _Spool, rejects: IO[str]
    ) -> None:  # type: ignore[no-untyped-def]
        config, name = self.config, source.source_name
        stats = self.stats.sources[name]
        rows: Iterator[RawRow] = iter_rows(source.path)
        if config.limit is not None:
            rows = itertools.islice(rows, config.limit)
        fmt, rows = _resolve_format(source, rows, self.kind)
        if fmt == SAMPLES_FORMAT:  # on-policy samples: paired up first, then filtered like any pair
            from data_prep.onpolicy import pair_samples

            fmt, rows = "pairs", pair_samples(rows, config.pairs_per_prompt, config.samples_reward)
        pending: deque[Future] = deque()
        progress = _progress(config, name)
        try:
            for batch in _batches(rows, config.batch_size):
                stats.read += sum(not raw.is_file_error for raw in batch)
                pending.append(submit(name, fmt, batch))
                while len(pending) > 2 * max(1, config.workers):
                    self._collect(pending.popleft().result(), name, deduper, spool, rejects, progress)
            while pending:
                self._collect(pending.popleft().result(), name, deduper, spool, rejects, progress)
        finally:
            for future in pending:
                future.cancel()
            if progress is not None:
                progress.close()

    def _collect(
        self, batch, source: str, deduper: _Deduper, spool: _Spool, rejects: IO[str], progress
    ) -> None:  # type: ignore[no-untyped-def]
        stats = self.stats.sources[source]
        results, timings = batch
        for stage, seconds in timings.items():
            key = f"worker_{stage}"
            self.stats.stage_seconds[key] = self.stats.stage_seconds.get(key, 0.0) + seconds
        started = time.perf_counter()
        for result in results:
            if isinstance(result, Candidate):
                if result.length is not None:
                    self.stats.measured_lengths.append(result.length)
                duplicate = deduper.check(result)
                if duplicate is None:
                    stats.passed_filters += 1
                    stats.verify_undecided += int(result.verify_undecided)
                    spool.add(result.line, result.length)
                    continue
                reason, detail = duplicate
                row = json.loads(result.line)
                result = Rejected(
                    reason, detail, result.file, result.position, result.unit, row, result.length
                )
            elif result.length is not None:
                self.stats.measured_lengths.append(result.length)
            elif result.reason == E.TOO_LONG:  # dropped by the size pre-check, never tokenized
                self.stats.unmeasured_too_long += 1
            if result.reason == E.FILE_ERROR:
                self.stats.file_errors.append({"file": result.file, "detail": result.detail})
            else:
                stats.rejected[result.reason] += 1
                if self.stats.first_reject is None:
                    self.stats.first_reject = (
                        f"{result.file}:{result.unit} {result.position}: {result.reason}: {result.detail}"
                    )
            entry = {
                "reason": result.reason,
                "detail": result.detail,
                "source": source,
                "file": result.file,
                "line" if result.unit == "line" else "row_number": result.position,
                "row": result.row,
            }
            rejects.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
            if self.config.strict and result.reason in E.BAD_INPUT_REASONS:
                raise DataPrepError(
                    f"{result.file}:{result.unit} {result.position}: {result.reason}: {result.detail} (--strict)"
                )
        elapsed = time.perf_counter() - started
        self.stats.stage_seconds["main_dedup_and_spool"] = (
            self.stats.stage_seconds.get("main_dedup_and_spool", 0.0) + elapsed
        )
        if progress is not None:
            progress.update(len(results))

    # -- stage 2: mix and split -----------------------------------------------------------------------

    def _select(self, spools: list[_Spool]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Caps, then the validation split, then weights (training rows only). Deterministic in the seed."""
        config = self.config
        rng = random.Random(config.seed)
        capped: list[list[int]] = []
        for source, spool in zip(config.inputs, spools, strict=True):
            rows = list(range(len(spool)))
            if source.max_rows is not None and len(rows) > source.max_rows:
                rows = sorted(rng.sample(rows, source.max_rows))
            capped.append(rows)
        unique = [(i, j) for i, rows in enumerate(capped) for j in rows]
        if config.shuffle:
            rng.shuffle(unique)
        n_val = int(config.val_size) if config.val_size >= 1 else round(len(unique) * config.val_size)
        n_val = min(n_val, len(unique))
        val, rest = unique[:n_val], unique[n_val:]
        train: list[tuple[int, int]] = []
        for i, source in enumerate(config.inputs):
            mine = [pair for pair in rest if pair[0] == i]
            whole, fraction = divmod(source.weight, 1.0)
            picked = mine * int(whole)
            extra = round(len(mine) * fraction)
            picked += [mine[k] for k in sorted(rng.sample(range(len(mine)), extra))]
            train += picked
        if config.shuffle:
            rng.shuffle(train)
        else:
            train.sort()
        for i, j in train:
            self.stats.sources[config.inputs[i].source_name].selected_train += 1
            length = spools[i].lengths[j]
            if length >= 0:
                self.stats.kept_lengths.append(length)
        for i, _ in val:
            self.stats.sources[config.inputs[i].source_name].selected_val += 1
        return train, val

    def _write_rows(self, spools: list[_Spool], pairs: list[tuple[int, int]], path: Path) -> None:
        with contextlib.ExitStack() as stack, open(path, "wb") as out:
            handles = [stack.enter_context(open(s.path, "rb")) for s in spools]
            for i, j in pairs:
                handle = handles[i]
                handle.seek(spools[i].offsets[j])
                out.write(handle.readline())

    def _info_entry(self, filename: str) -> dict[str, Any]:
        if self.kind == "pref":
            from data_prep.preference import ranking_info_entry

            return ranking_info_entry(filename)
        if self.kind == "sft":
            return sharegpt_info_entry(filename, {"messages": "messages"})
        return {
            "file_name": filename,
            "task": "rlvr",
            "columns": {"id": "id", "prompt": "prompt", "answer": "answer", "task": "task", "tests": "tests"},
        }


def _resolve_format(
    source: SourceConfig, rows: Iterator[RawRow], kind: str = "sft"
) -> tuple[str, Iterator[RawRow]]:
    """The explicit format, or the one detected on the first readable row (rows are not consumed)."""
    if source.format != "auto":
        return source.format, rows
    detect = detect_pref_format if kind == "pref" else detect_format
    seen: list[RawRow] = []
    for raw in rows:
        seen.append(raw)
        if raw.data is not None:
            fmt = detect(raw.data)
            if fmt is None:
                raise DataPrepError(
                    f"{raw.location}: cannot detect the format from keys {sorted(raw.data)}; pass --format"
                )
            return fmt, itertools.chain(seen, rows)
    return ("pairs" if kind == "pref" else "simple"), iter(seen)


def _batches(rows: Iterator[RawRow], size: int) -> Iterator[list[RawRow]]:
    while True:
        batch = list(itertools.islice(rows, size))
        if not batch:
            return
        yield batch


def _progress(config: BuildConfig, name: str):  # type: ignore[no-untyped-def]
    if not config.progress:
        return None
    from tqdm import tqdm

    return tqdm(desc=name, unit=" rows", mininterval=1.0, leave=False, disable=None)  # off when not a TTY


class _InlineFuture:
    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value

    def cancel(self) -> bool:
        return False


class _executor:
    """Worker processes when workers > 0, else the same work inline (tests, debugging)."""

    def __init__(self, config: BuildConfig, settings: RowSettings) -> None:
        self.config, self.settings = config, settings
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        if self.config.workers <= 0:
            processor = RowProcessor(self.settings)
            return lambda source, fmt, rows: _InlineFuture(
                (processor.process(source, fmt, rows), processor.take_timings())
            )
        context = multiprocessing.get_context(
            "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        )
        self.pool = ProcessPoolExecutor(
            max_workers=self.config.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self.settings, os.getpid()),
        )
        return lambda source, fmt, rows: self.pool.submit(_work, source, fmt, rows)

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
