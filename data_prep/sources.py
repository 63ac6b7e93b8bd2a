"""Stream raw rows out of local files: JSONL(.gz), JSON arrays, Parquet, Arrow / `save_to_disk` folders,
and folders of shards. Memory stays bounded by one batch, never by the file.

A file that cannot be read to its end (truncated or corrupt .gz, a file that is not Parquet, a JSON array
that breaks off) ends with one `file_error` row: the rows read before the error are kept, the error is
reported with the position where reading stopped, and the next file is read.
"""

from __future__ import annotations

import codecs
import gzip
import json
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from data_prep.errors import FILE_ERROR, MALFORMED_ROW, DataPrepError, RowRejected

SHARD_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet", ".arrow")
_ARROW_BATCH_ROWS = 256
_JSON_CHUNK_CHARS = 1 << 20
# Deeper rows are rejected: real datasets nest a handful of levels, and deeper values make json, pickle and
# every later stage recurse (Python's own JSON decoder stops with RecursionError near 1000 levels).
MAX_JSON_DEPTH = 100


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

    @property
    def is_file_error(self) -> bool:
        """Not a row: the file could not be read past `position`."""
        return self.error is not None and self.error.reason == FILE_ERROR


class _FileUnreadable(Exception):
    """Raised inside a reader when the rest of the file cannot be read."""


def iter_rows(path: str | Path) -> Iterator[RawRow]:
    """All rows of one input path (a file or a folder), in a stable order."""
    path = Path(path)
    if not path.exists():
        raise DataPrepError(f"{path}: input does not exist")
    if path.is_dir():
        yield from _iter_folder(path)
        return
    yield from _iter_file(path)


def _reader_for(path: Path) -> tuple[Callable[[Path], Iterator[RawRow]], str]:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return _iter_jsonl, "line"
    if name.endswith(".json"):
        return _iter_json, "row"
    if name.endswith(".parquet"):
        return _iter_parquet, "row"
    if name.endswith(".arrow"):
        return _iter_arrow, "row"
    raise DataPrepError(f"{path}: unknown file type (expected one of {', '.join(SHARD_SUFFIXES)})")


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a damaged file raises while it is read (pyarrow's errors only once pyarrow is loaded)."""
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, _FileUnreadable)
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        errors += (pyarrow.ArrowException,)
    return errors


def _iter_file(path: Path) -> Iterator[RawRow]:
    reader, unit = _reader_for(path)
    last = 0
    try:
        for row in reader(path):
            last = row.position
            yield row
    except _read_errors() as err:
        detail = f"cannot read past {unit} {last}: {_describe(path, err)}" if last else _describe(path, err)
        yield RawRow(str(path), last + 1, unit, None, RowRejected(FILE_ERROR, detail))


def _describe(path: Path, err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if isinstance(err, EOFError) and path.name.lower().endswith(".gz"):
        return f"truncated gzip file ({text})"
    if isinstance(err, (gzip.BadGzipFile, zlib.error)):
        return f"corrupt gzip file ({text})"
    if path.name.lower().endswith(".parquet") and not isinstance(err, OSError):
        return f"not a readable Parquet file ({text})"
    return text


def _folder_index(path: Path, key: str) -> Any:
    """A `datasets` folder index file (state.json / dataset_dict.json) and the key that lists its parts."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))[key]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataPrepError(f"{path}: unreadable datasets index ({type(err).__name__}: {err})") from err


def _iter_folder(path: Path) -> Iterator[RawRow]:
    state = path / "state.json"
    if state.is_file():  # one split written by datasets' save_to_disk
        files = [path / f["filename"] for f in _folder_index(state, "_data_files")]
        for file in files:
            yield from _iter_file(file)
        return
    dict_file = path / "dataset_dict.json"
    if dict_file.is_file():  # a DatasetDict: every split, in the saved order
        for split in _folder_index(dict_file, "splits"):
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


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when lists/dicts nest deeper than `limit` (iterative: never recurses itself)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _row_or_error(item: Any, text: str | None = None) -> tuple[dict[str, Any] | None, RowRejected | None]:
    """A decoded value as a row: an object no deeper than MAX_JSON_DEPTH, else the reason it is not one.
    `text` (the encoded row) lets most rows skip the depth walk: fewer brackets than the limit cannot nest
    deeper than it."""
    if not isinstance(item, dict):
        return None, RowRejected(MALFORMED_ROW, f"expected a JSON object, got {type(item).__name__}")
    few_brackets = text is not None and text.count("[") + text.count("{") <= MAX_JSON_DEPTH
    if not few_brackets and json_depth_exceeds(item):
        return None, RowRejected(MALFORMED_ROW, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return item, None


def _parse_object(text: str) -> tuple[dict[str, Any] | None, RowRejected | None]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        return None, RowRejected(MALFORMED_ROW, f"invalid JSON: {err.msg} at column {err.colno}")
    except RecursionError:
        return None, RowRejected(MALFORMED_ROW, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return _row_or_error(data, text)


def _iter_jsonl(path: Path) -> Iterator[RawRow]:
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):  # Windows editors write one
                raw = raw[len(codecs.BOM_UTF8) :]
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


def _wrapped_rows(document: dict[str, Any]) -> list[Any] | None:
    """The row list of a wrapper object ({"data": [...]}, {"version": 1, "rows": [...]}), or None when the
    object is itself one row (it has the fields of a known schema, or no list of objects to unwrap)."""
    from data_prep.formats import detect_format

    if detect_format(document) is not None:
        return None
    for key in ("data", "rows"):
        if isinstance(document.get(key), list):
            return document[key]
    lists = [
        v for v in document.values() if isinstance(v, list) and v and all(isinstance(i, dict) for i in v)
    ]
    return lists[0] if len(lists) == 1 else None


def _iter_json(path: Path) -> Iterator[RawRow]:
    """A top-level JSON array is decoded element by element; other JSON documents are loaded whole: an
    object is one row unless it wraps a list of rows."""
    with open(path, encoding="utf-8-sig", errors="strict") as handle:
        try:
            head = handle.read(_JSON_CHUNK_CHARS)
        except UnicodeDecodeError as err:
            raise _FileUnreadable(f"invalid UTF-8 byte at offset {err.start}") from err
        if head.lstrip().startswith("["):
            yield from _iter_json_array(path, handle, head)
            return
        try:
            text = head + handle.read()
            document = json.loads(text)
        except UnicodeDecodeError as err:
            raise _FileUnreadable(f"invalid UTF-8 byte at offset {err.start}") from err
        except json.JSONDecodeError as err:
            raise _FileUnreadable(f"line {err.lineno}: invalid JSON: {err.msg}") from err
        except RecursionError as err:
            raise _FileUnreadable(
                f"JSON nested deeper than Python can decode (limit {MAX_JSON_DEPTH})"
            ) from err
    rows = document
    if isinstance(document, dict):
        rows = _wrapped_rows(document)
        if rows is None:
            rows = [document]
    elif not isinstance(document, list):
        raise _FileUnreadable(f"expected a JSON object or array, got {type(document).__name__}")
    for number, item in enumerate(rows, start=1):
        data, error = _row_or_error(item)
        yield RawRow(str(path), number, "row", data, error)


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
            raise _FileUnreadable(f"invalid UTF-8 byte near offset {err.start}") from err
        lines_before += buffer.count("\n", 0, pos)
        buffer, pos, eof = buffer[pos:] + chunk, 0, not chunk

    while True:
        while pos < len(buffer) and buffer[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(buffer):
            if eof:
                raise _FileUnreadable("the JSON array is not closed with ']'")
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
            raise _FileUnreadable(f"line {line}: invalid JSON array element: {err.msg}") from err
        except RecursionError:  # one element too deep: skip it as a row error, as in JSONL
            end = _skip_element(buffer, pos)
            if end is None:
                if not eof:
                    refill()
                    continue
                raise _FileUnreadable("the JSON array is not closed with ']'") from None
            number += 1
            error = RowRejected(MALFORMED_ROW, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            yield RawRow(str(path), number, "row", None, error)
            pos = end
            continue
        if end == len(buffer) and not eof:  # the element may be cut by the chunk boundary
            refill()
            continue
        number += 1
        data, error = _row_or_error(item, buffer[pos:end])
        yield RawRow(str(path), number, "row", data, error)
        pos = end


def _skip_element(buffer: str, pos: int) -> int | None:
    """End of the JSON value starting at `pos` (brackets matched outside strings), None when cut off."""
    depth, i, in_string = 0, pos, False
    while i < len(buffer):
        char = buffer[i]
        if in_string:
            if char == "\\":
                i += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


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
