"""The portable path, for databases without COPY (SQLite, the embedded default)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as parquet
from django.db import connection, transaction
from django.db.models import QuerySet

from ratings.pseudonyms import Pseudonyms
from ratings.snapshots.postgres_parquet import _arrow_schema
from ratings.snapshots.schema import (
    CHUNK_ROWS,
    PROGRESS_EVERY,
    PSEUDONYM,
    ROWS_PER_GROUP,
    Column,
    ProgressFn,
    Table,
    _audiofolder_columns,
)


@contextmanager
def _portable_view() -> Iterator[None]:
    """One view of the database for the build: a savepoint inside a caller's transaction (the
    portable path reads on Django's connection only, so it can see what that transaction
    wrote), else a transaction that only reads."""
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        with transaction.atomic():
            yield
        return
    # transaction.atomic() would BEGIN IMMEDIATE (config/settings.py), holding SQLite's write
    # lock, and so every vote, for the whole build. A deferred transaction that only reads
    # sees one snapshot of the database (WAL) and lets writers go on.
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("BEGIN DEFERRED")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ROLLBACK")  # nothing was written


# The same rows as sql.py's (the tables' ORM queries, in key order), turned into the same
# text and Arrow values in Python: on the same data and salt every file is byte-identical to
# the COPY path's (tests/ratings/test_snapshots_sqlite.py compares them on PostgreSQL). Known
# corner cases where the text could still differ, none of which the platform stores: years
# before 1000 or BC (PostgreSQL pads and writes " BC"), and a stored audio name ending in a
# line break (Python's "$" matches before it, PostgreSQL's does not).


def _python_rows(
    table: Table, columns: Sequence[Column], pseudonyms: Pseudonyms, rows: QuerySet | None = None
) -> Iterator[list[Any]]:
    """The output values of `columns` for each row of `rows` (the table's rows by default), in
    the table's key order, fetched CHUNK_ROWS at a time."""
    cache: dict[int, str] = {}  # one HMAC per rater, as the SQL's pseudonym subquery
    rows = table.rows if rows is None else rows
    for row in rows.order_by(table.key).iterator(chunk_size=CHUNK_ROWS):
        rater_id = row.get("rater_id")
        if rater_id is not None:
            if rater_id not in cache:
                cache[rater_id] = pseudonyms.of(rater_id)
            row[PSEUDONYM] = cache[rater_id]
        else:
            row[PSEUDONYM] = None  # as the LEFT JOIN
        yield [column.value(row) for column in columns]


def _timestamp_text(moment: datetime) -> str:
    """As PostgreSQL writes a timestamptz in JSON in UTC: "2026-01-02T03:04:05.1234+00:00",
    trailing zeros of the fraction dropped and no fraction at all on a whole second."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "+00:00"


def _float_text(value: float) -> str:
    """As PostgreSQL (12+) writes a float8: the shortest text that reads back exactly, "10"
    rather than Python's "10.0", and an exponent from 1e15 on (Python's repr: from 1e16)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value and not 1e-4 <= abs(value) < 1e15:
        return np.format_float_scientific(value, unique=True, trim="-", exp_digits=2)
    text = repr(value)
    return text.removesuffix(".0")


def _text_value(value: Any) -> str | None:
    """One CSV value as text before quoting (None is NULL)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _timestamp_text(value)
    if isinstance(value, float):
        return _float_text(value)
    return str(value)


def _csv_field(value: Any) -> str:
    """A CSV field as COPY (FORMAT csv) writes it: NULL as nothing, the empty string as "",
    and quotes only around text holding a comma, a quote or a line break. Python's csv module
    cannot tell NULL from "" (QUOTE_NOTNULL is Python 3.12+)."""
    text = _text_value(value)
    if text is None:
        return ""
    if text == "" or any(char in text for char in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _json_text_value(value: Any) -> str:
    """One JSON value as row_to_json writes it. json.dumps escapes strings the same way (the
    quote, the backslash and control characters; other text as UTF-8)."""
    if isinstance(value, datetime):
        return f'"{_timestamp_text(value)}"'
    if isinstance(value, float):
        text = _float_text(value)
        return text if math.isfinite(value) else f'"{text}"'  # as row_to_json does
    return json.dumps(value, ensure_ascii=False)


def _json_lines(columns: Sequence[Column], rows: Iterable[list[Any]]) -> Iterator[bytes]:
    keys = [json.dumps(column.name) + ":" for column in columns]
    for values in rows:
        fields = ",".join(key + _json_text_value(v) for key, v in zip(keys, values, strict=True))
        yield f"{{{fields}}}\n".encode()


def _write_lines(path: Path, lines: Iterable[bytes], progress: ProgressFn) -> int:
    """The lines in one file, counted as _write_copy counts them."""
    rows = 0
    with path.open("wb") as out:
        for line in lines:
            out.write(line)
            rows += 1
            if rows % PROGRESS_EVERY == 0:
                progress(path.name, PROGRESS_EVERY)
    progress(path.name, rows % PROGRESS_EVERY)
    return rows


def _portable_csv(path: Path, table: Table, pseudonyms: Pseudonyms, progress: ProgressFn) -> int:
    def lines() -> Iterator[bytes]:
        yield (",".join(_csv_field(c.name) for c in table.columns) + "\n").encode()
        for values in _python_rows(table, table.columns, pseudonyms):
            yield (",".join(map(_csv_field, values)) + "\n").encode()

    return _write_lines(path, lines(), progress) - 1  # not the header


def _portable_jsonl(path: Path, table: Table, pseudonyms: Pseudonyms, progress: ProgressFn) -> int:
    rows = _python_rows(table, table.columns, pseudonyms)
    return _write_lines(path, _json_lines(table.columns, rows), progress)


def _portable_metadata(
    path: Path, votes: Table, pseudonyms: Pseudonyms, progress: ProgressFn
) -> int:
    # The order of _postgres_metadata, (track_b_id IS NULL), vote_id, as two passes.
    columns = _audiofolder_columns(votes)

    def rows() -> Iterator[list[Any]]:
        for single_clip in (False, True):
            subset = votes.rows.filter(track_b_id__isnull=single_clip)
            yield from _python_rows(votes, columns, pseudonyms, subset)

    return _write_lines(path, _json_lines(columns, rows()), progress)


def _portable_parquet(
    path: Path, table: Table, pseudonyms: Pseudonyms, progress: ProgressFn
) -> int:
    """The schema and row groups of _write_parquet (exactly ROWS_PER_GROUP rows each), built
    from Arrow tables of CHUNK_ROWS rows so that a group never exists as Python objects."""
    schema = _arrow_schema(table)
    pending: list[pa.Table] = []
    buffered = written = 0

    def chunk(values: list[list[Any]]) -> pa.Table:
        arrays = [pa.array(column, type=f.type) for column, f in zip(values, schema, strict=True)]
        return pa.Table.from_arrays(arrays, schema=schema)

    with parquet.ParquetWriter(path, schema, compression="snappy") as writer:

        def flush(rows: int) -> None:
            nonlocal pending, buffered, written
            whole = pa.concat_tables(pending)
            writer.write_table(whole.slice(0, rows), row_group_size=rows)
            pending, buffered = [whole.slice(rows)], buffered - rows
            written += rows
            progress(path.name, rows)

        columns: list[list[Any]] = [[] for _ in schema]
        for values in _python_rows(table, table.columns, pseudonyms):
            for column, value in zip(columns, values, strict=True):
                column.append(value)
            if len(columns[0]) == CHUNK_ROWS:
                pending.append(chunk(columns))
                buffered += CHUNK_ROWS
                columns = [[] for _ in schema]
                while buffered >= ROWS_PER_GROUP:
                    flush(ROWS_PER_GROUP)
        if columns[0]:
            pending.append(chunk(columns))
            buffered += len(columns[0])
        while buffered:
            flush(min(buffered, ROWS_PER_GROUP))
    return written
