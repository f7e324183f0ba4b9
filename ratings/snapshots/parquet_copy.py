"""Parquet on PostgreSQL: the facts of each row as fixed-width binary COPY rows that numpy
reads in blocks, the repeated text looked up in small per-key dimension tables, and each
block of ROWS_PER_GROUP rows written as one row group."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as parquet
from django.db.models import QuerySet

from ratings.pseudonyms import Pseudonyms
from ratings.snapshots.postgres import _copy_rows
from ratings.snapshots.schema import (
    INT64,
    ROWS_PER_GROUP,
    STR,
    TIMESTAMP,
    Column,
    ProgressFn,
    Table,
)
from ratings.snapshots.sql import _parquet_sql


def _arrow_schema(table: Table) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type) for c in table.columns])


def _csv_reading(table: Table) -> tuple[pcsv.ReadOptions, pcsv.ParseOptions, pcsv.ConvertOptions]:
    types = {c.name: pa.int64() if c.type == TIMESTAMP else c.type for c in table.columns}
    return (
        pcsv.ReadOptions(column_names=[c.name for c in table.columns]),
        pcsv.ParseOptions(newlines_in_values=True),
        # PostgreSQL writes NULL as an unquoted empty field and "" as a quoted one; no other
        # spelling may turn into a null (a prompt may well read "NA").
        pcsv.ConvertOptions(
            column_types=types, null_values=[""], true_values=["t"], false_values=["f"],
            strings_can_be_null=True, quoted_strings_can_be_null=False,
        ),
    )  # fmt: skip


def _to_arrow(table: Table, chunk: bytes) -> pa.Table:
    read, parse, convert = _csv_reading(table)
    parsed = pcsv.read_csv(pa.py_buffer(chunk), read, parse, convert)
    for index, column in enumerate(table.columns):
        if column.type == TIMESTAMP:
            parsed = parsed.set_column(index, column.name, pc.cast(parsed.column(index), TIMESTAMP))
    return parsed.cast(_arrow_schema(table))


def _write_parquet(path: Path, table: Table, pseudonyms: Pseudonyms, progress: ProgressFn) -> int:
    """Row groups of exactly ROWS_PER_GROUP rows, so the file depends on the rows alone."""
    rows = 0
    schema = _arrow_schema(table)
    with (
        parquet.ParquetWriter(path, schema, compression="snappy") as writer,
        closing(_arrow_groups(table, pseudonyms)) as groups,
    ):
        for group in groups:
            writer.write_table(group, row_group_size=len(group))
            rows += len(group)
            progress(path.name, len(group))
    return rows


def _arrow_groups(table: Table, pseudonyms: Pseudonyms) -> Iterator[pa.Table]:
    if table.facts is None:
        yield from _csv_groups(table, pseudonyms)
        return
    dimensions = {key: _read_arrow(dim, pseudonyms) for key, dim in table.dimensions.items()}
    facts = table.fact_columns()
    with closing(_binary_records(table, facts, table.facts)) as chunks:
        for records in chunks:
            yield _assemble(table, facts, records, dimensions)


def _csv_groups(table: Table, pseudonyms: Pseudonyms) -> Iterator[pa.Table]:
    sql, params = _parquet_sql(table, pseudonyms)
    chunk: list[memoryview] = []
    with closing(_copy_rows(sql, params)) as lines:
        for data in lines:
            chunk.append(data)
            if len(chunk) == ROWS_PER_GROUP:
                yield _to_arrow(table, b"".join(chunk))
                chunk = []
    if chunk:
        yield _to_arrow(table, b"".join(chunk))


def _read_arrow(table: Table, pseudonyms: Pseudonyms) -> pa.Table:
    """A whole (small) table in memory, sorted by its key."""
    if all(column.type != STR or column.codes for column in table.columns):
        with closing(_binary_records(table, table.columns, table.rows)) as chunks:
            groups = [_assemble(table, table.columns, records, {}) for records in chunks]
    else:
        with closing(_csv_groups(table, pseudonyms)) as chunks:
            groups = list(chunks)
    return pa.concat_tables(groups) if groups else _arrow_schema(table).empty_table()


# PostgreSQL's binary COPY: a 19-byte header (signature, flags, no extension), then per row a
# 16-bit field count and per field a 32-bit length and the big-endian value, then -1 (16 bits).
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
COPY_HEADER = 19
BINARY_TYPES = {
    INT64: ("int8", ">i8"), pa.int32(): ("int4", ">i4"), pa.int16(): ("int2", ">i2"),
    # timestamptz travels as microseconds since 2000-01-01: converting in SQL costs more.
    pa.bool_(): ("bool", "?"), TIMESTAMP: ("timestamptz", ">i8"), STR: ("int2", ">i2"),
}  # fmt: skip


def _fact_sql(column: Column) -> str:
    pg_type = BINARY_TYPES[column.type][0]
    if column.codes:
        # Position 1.. in `codes`; 0 for NULL (index 0 of the decoding array is None).
        cases = " ".join(f"WHEN '{code}' THEN {i}" for i, code in enumerate(column.codes, 1))
        return f'(CASE {column.sql} {cases} ELSE 0 END)::{pg_type} AS "{column.name}"'
    expression = column.sql
    if column.nullable:
        expression = f"coalesce({expression}, -1)"
    return f'({expression})::{pg_type} AS "{column.name}"'


def _record_type(facts: list[Column]) -> np.dtype:
    fields = [("fields", ">i2")]
    for index, column in enumerate(facts):
        fields += [(f"length{index}", ">i4"), (column.name, BINARY_TYPES[column.type][1])]
    return np.dtype(fields)


def _binary_records(table: Table, facts: list[Column], rows: QuerySet) -> Iterator[np.ndarray]:
    """The fact columns as numpy records, ROWS_PER_GROUP at a time: every field has a fixed
    width (NULLs were replaced by -1 in SQL), so no row is parsed in Python."""
    inner, params = table.inner_sql(rows)
    expressions = ", ".join(_fact_sql(column) for column in facts)
    sql = (
        f'COPY (SELECT {expressions} FROM ({inner}) q ORDER BY q."{table.key}") '
        "TO STDOUT (FORMAT binary)"
    )
    record = _record_type(facts)
    group_bytes = record.itemsize * ROWS_PER_GROUP
    buffer = bytearray()
    with closing(_copy_rows(sql, params)) as lines:
        for data in lines:
            buffer += data
            if len(buffer) >= COPY_HEADER + group_bytes:
                yield _records(buffer, COPY_HEADER, group_bytes, record, len(facts))
                del buffer[COPY_HEADER : COPY_HEADER + group_bytes]
    if not buffer.startswith(COPY_SIGNATURE) or not buffer.endswith(b"\xff\xff"):
        raise RuntimeError("unexpected binary COPY framing")
    rest = len(buffer) - COPY_HEADER - 2
    if rest:
        yield _records(buffer, COPY_HEADER, rest, record, len(facts))


def _records(buffer: bytearray, start: int, size: int, record: np.dtype, count: int) -> np.ndarray:
    if size % record.itemsize:
        raise RuntimeError("binary COPY rows are not the expected width")
    records = np.frombuffer(bytes(buffer[start : start + size]), dtype=record)
    # A NULL that was not replaced would have length -1 and shift every later field.
    if (records["fields"] != count).any():
        raise RuntimeError("binary COPY rows have an unexpected field count")
    for index in range(count):
        width = record.fields[record.names[2 + 2 * index]][0].itemsize
        if (records[f"length{index}"] != width).any():
            raise RuntimeError(f"binary COPY field {record.names[2 + 2 * index]} is not fixed")
    return records


POSTGRES_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970


def _lookup(keys: np.ndarray, wanted: np.ndarray) -> pa.Array:
    """Row of each wanted key in the sorted `keys`; null where it is missing (votes without
    scores)."""
    if not len(keys):
        return pa.nulls(len(wanted), pa.int64())
    rows = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return _from_numpy(rows.astype(np.int64), pa.int64(), keys[rows] != wanted)


def _from_numpy(
    values: np.ndarray, type_: pa.DataType, nulls: np.ndarray | None = None
) -> pa.Array:
    """An Arrow array over a numpy column of the same width. pa.array() would do, but its
    first call from numpy imports pandas, 0.4 s of every export process."""
    validity = None
    if nulls is not None and nulls.any():
        validity = pa.py_buffer(np.packbits(~nulls, bitorder="little"))
    if type_ == pa.bool_():
        data = pa.py_buffer(np.packbits(values.astype(bool), bitorder="little"))
    else:
        data = pa.py_buffer(np.ascontiguousarray(values))
    return pa.Array.from_buffers(type_, len(values), [validity, data])


def _int64_numpy(array: pa.Array) -> np.ndarray:
    """The values of an int64 array without nulls (to_numpy() imports pandas, see above)."""
    if array.null_count:
        raise ValueError("a lookup key is NULL")
    return np.frombuffer(array.buffers()[1], np.int64, len(array), array.offset * 8)


def _strings(values: Sequence[str | None]) -> pa.Array:
    """A small string array, built from buffers for the same reason as _from_numpy."""
    encoded = [(value or "").encode() for value in values]
    offsets = np.cumsum([0, *map(len, encoded)], dtype=np.int32)
    nulls = np.array([value is None for value in values])
    validity = pa.py_buffer(np.packbits(~nulls, bitorder="little"))
    buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(STR, len(values), buffers)


def _assemble(
    table: Table, facts: list[Column], records: np.ndarray, dimensions: dict[str, pa.Table]
) -> pa.Table:
    arrays: dict[str, pa.Array] = {}
    for column in facts:
        values = records[column.name].astype(records.dtype[column.name].newbyteorder("="))
        if column.codes:
            codes = _from_numpy(values, pa.int16())
            arrays[column.name] = _strings((None, *column.codes)).take(codes)
        elif column.type == TIMESTAMP:
            arrays[column.name] = _from_numpy(values + POSTGRES_EPOCH_US, TIMESTAMP)
        else:
            mask = values == -1 if column.nullable else None
            arrays[column.name] = _from_numpy(values, column.type, mask)
    for key, dimension in dimensions.items():
        keys = _int64_numpy(dimension.column(key).combine_chunks())
        rows = _lookup(keys, _int64_numpy(arrays[key]))
        for name in dimension.column_names[1:]:
            arrays[name] = dimension.column(name).take(rows)
    return pa.table([arrays[c.name] for c in table.columns], schema=_arrow_schema(table))
