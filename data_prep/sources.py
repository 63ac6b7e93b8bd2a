"""Stream raw rows out of local files: JSONL(.gz), JSON arrays, Parquet, Arrow / `save_to_disk` folders,
and folders of shards. Memory stays bounded by one batch, never by the file."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from data_prep.errors import MALFORMED_ROW, DataPrepError, RowRejected

SHARD_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet", ".arrow")
_ARROW_BATCH_ROWS = 256
_JSON_CHUNK_CHARS = 1 << 20


@dataclass
class RawRow:
    """One row as read from disk: a dict, or the reason it could not be read."""

    file: str
    position: int  # 1-based line (JSONL) or row (other formats)
    unit: str  # "line" or "row"
    data: dict[str, Any] | None
    error: RowRejected | None = None
    raw_text: str | None = (
        None  # the undecodable line itself, so rejects.jsonl keeps what could not be parsed
    )

    @property
    def location(self) -> str:
        return f"{self.file}:{self.unit} {self.position}"


def iter_rows(path: str | Path) -> Iterator[RawRow]:
    """All rows of one input path (a file or a folder), in a stable order."""
    path = Path(path)
    if not path.exists():
        raise DataPrepError(f"{path}: input does not exist")
    if path.is_dir():
        yield from _iter_folder(path)
        return
    yield from _iter_file(path)


def _iter_file(path: Path) -> Iterator[RawRow]:
    name = path.name.lower()
    try:
        if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
            yield from _iter_jsonl(path)
        elif name.endswith(".json"):
            yield from _iter_json(path)
        elif name.endswith(".parquet"):
            yield from _iter_parquet(path)
        elif name.endswith(".arrow"):
            yield from _iter_arrow(path)
        else:
            raise DataPrepError(f"{path}: unknown file type (expected one of {', '.join(SHARD_SUFFIXES)})")
    except OSError as err:
        raise DataPrepError(f"{path}: cannot read: {err}") from err


def _iter_folder(path: Path) -> Iterator[RawRow]:
    state = path / "state.json"
    if state.is_file():  # one split written by datasets' save_to_disk
        files = [path / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
        for file in files:
            yield from _iter_file(file)
        return
    dict_file = path / "dataset_dict.json"
    if dict_file.is_file():  # a DatasetDict: every split, in the saved order
        for split in json.loads(dict_file.read_text())["splits"]:
            yield from _iter_folder(path / split)
        return
    shards = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SHARD_SUFFIXES))
    if not shards:
        raise DataPrepError(f"{path}: folder holds no data files ({', '.join(SHARD_SUFFIXES)})")
    for shard in shards:
        yield from _iter_file(shard)


def _open_binary(path: Path) -> BinaryIO:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _parse_object(text: str) -> tuple[dict[str, Any] | None, RowRejected | None]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        return None, RowRejected(MALFORMED_ROW, f"invalid JSON: {err.msg} at column {err.colno}")
    if not isinstance(data, dict):
        return None, RowRejected(MALFORMED_ROW, f"expected a JSON object, got {type(data).__name__}")
    return data, None


def _iter_jsonl(path: Path) -> Iterator[RawRow]:
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad = raw[err.start : err.start + 1].hex()
                error = RowRejected(MALFORMED_ROW, f"invalid UTF-8 byte 0x{bad} at column {err.start + 1}")
                kept = raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
                yield RawRow(str(path), number, "line", None, error, raw_text=kept)
                continue
            text = text.rstrip("\r\n")
            data, error = _parse_object(text)
            yield RawRow(str(path), number, "line", data, error, raw_text=text if error is not None else None)


def _iter_json(path: Path) -> Iterator[RawRow]:
    """A top-level JSON array is decoded element by element; other JSON documents are loaded whole."""
    with open(path, encoding="utf-8", errors="strict") as handle:
        try:
            head = handle.read(_JSON_CHUNK_CHARS)
        except UnicodeDecodeError as err:
            raise DataPrepError(f"{path}: invalid UTF-8 byte at offset {err.start}") from err
        if head.lstrip().startswith("["):
            yield from _iter_json_array(path, handle, head)
            return
        try:
            text = head + handle.read()
            document = json.loads(text)
        except UnicodeDecodeError as err:
            raise DataPrepError(f"{path}: invalid UTF-8 byte at offset {err.start}") from err
        except json.JSONDecodeError as err:
            raise DataPrepError(f"{path}:line {err.lineno}: invalid JSON: {err.msg}") from err
    rows = document
    if isinstance(document, dict):
        lists = [v for v in document.values() if isinstance(v, list)]
        rows = document.get("data", document.get("rows", lists[0] if len(lists) == 1 else [document]))
    for number, item in enumerate(rows, start=1):
        error = None if isinstance(item, dict) else RowRejected(MALFORMED_ROW, "expected a JSON object")
        yield RawRow(str(path), number, "row", item if error is None else None, error)


def _iter_json_array(path: Path, handle: Any, buffer: str) -> Iterator[RawRow]:
    decoder = json.JSONDecoder()
    pos = buffer.index("[") + 1
    lines_before = 0  # newlines in text already dropped from the buffer
    number = 0
    eof = False

    def refill() -> None:
        nonlocal buffer, pos, lines_before, eof
        try:
            chunk = handle.read(_JSON_CHUNK_CHARS)
        except UnicodeDecodeError as err:
            raise DataPrepError(f"{path}: invalid UTF-8 byte near offset {err.start}") from err
        lines_before += buffer.count("\n", 0, pos)
        buffer, pos, eof = buffer[pos:] + chunk, 0, not chunk

    while True:
        while pos < len(buffer) and buffer[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(buffer):
            if eof:
                raise DataPrepError(f"{path}: JSON array is not closed with ']'")
            refill()
            continue
        if buffer[pos] == "]":
            return
        try:
            item, end = decoder.raw_decode(buffer, pos)
        except json.JSONDecodeError as err:
            if not eof:
                refill()
                continue
            line = lines_before + buffer.count("\n", 0, err.pos) + 1
            raise DataPrepError(f"{path}:line {line}: invalid JSON array element: {err.msg}") from err
        if end == len(buffer) and not eof:  # the element may be cut by the chunk boundary
            refill()
            continue
        number += 1
        error = None if isinstance(item, dict) else RowRejected(MALFORMED_ROW, "expected a JSON object")
        yield RawRow(str(path), number, "row", item if error is None else None, error)
        pos = end


def _iter_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_ARROW_BATCH_ROWS):
        for item in batch.to_pylist():
            number += 1
            yield RawRow(str(path), number, "row", item)


def _iter_arrow(path: Path) -> Iterator[RawRow]:
    """Arrow IPC stream files (what `datasets` writes), memory-mapped."""
    import pyarrow as pa

    number = 0
    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            batches = iter(reader)
        for batch in batches:
            for start in range(0, batch.num_rows, _ARROW_BATCH_ROWS):
                for item in batch.slice(start, _ARROW_BATCH_ROWS).to_pylist():
                    number += 1
                    yield RawRow(str(path), number, "row", item)
