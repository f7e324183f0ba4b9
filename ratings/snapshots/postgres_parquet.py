"""Parquet on PostgreSQL: every query is read straight into Arrow by adbc-driver-postgresql
(binary COPY decoded in C++, `postgres.ArrowReader`). The per-row facts (ids, choice,
listening times, time) come from the table's narrow query, the repeated text (prompt,
campaign, versions, audio paths, pseudonyms) is looked up in small per-key dimension tables,
and each block of ROWS_PER_GROUP rows becomes one row group."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as parquet

from ratings.pseudonyms import Pseudonyms
from ratings.snapshots.postgres import arrow_reader
from ratings.snapshots.schema import ROWS_PER_GROUP, Column, ProgressFn, Table
from ratings.snapshots.sql import _named, _select


def _arrow_schema(table: Table) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type) for c in table.columns])


def _write_parquet(path: Path, table: Table, pseudonyms: Pseudonyms, progress: ProgressFn) -> int:
    """Row groups of exactly ROWS_PER_GROUP rows, so the file depends on the rows alone."""
    rows = 0
    schema = _arrow_schema(table)
    with parquet.ParquetWriter(path, schema, compression="snappy") as writer:
        for group in _arrow_groups(table, pseudonyms):
            writer.write_table(group, row_group_size=len(group))
            rows += len(group)
            progress(path.name, len(group))
    return rows


def _arrow_groups(table: Table, pseudonyms: Pseudonyms) -> Iterator[pa.Table]:
    if table.facts is None:
        sql, params = _select(table, pseudonyms, _expressions(table.columns))
        yield from _groups(sql, params, _arrow_schema(table))
        return
    # Each dimension with its sorted keys as numpy, read once for all the groups.
    dimensions = {}
    for key, dim in table.dimensions.items():
        rows = _read_arrow(dim, pseudonyms)
        dimensions[key] = (_int64_numpy(rows.column(key)), rows)
    facts = table.fact_columns()
    inner, params = table.inner_sql(table.facts)
    sql = f'SELECT {", ".join(_expressions(facts))} FROM ({inner}) q ORDER BY q."{table.key}"'
    for group in _groups(sql, params, pa.schema([pa.field(c.name, c.type) for c in facts])):
        yield _assemble(table, group, dimensions)


def _expressions(columns: list[Column]) -> list[str]:
    return [_named(column.sql, column.name) for column in columns]


def _groups(sql: str, params: tuple, schema: pa.Schema) -> Iterator[pa.Table]:
    """The query's rows as tables of exactly ROWS_PER_GROUP rows (the last may be shorter),
    one chunk per column, in `schema`'s types."""
    pending: list[pa.RecordBatch] = []
    buffered = 0
    for batch in arrow_reader().batches(sql, params):
        pending.append(batch)
        buffered += batch.num_rows
        while buffered >= ROWS_PER_GROUP:
            whole = pa.Table.from_batches(pending)
            yield _typed(whole.slice(0, ROWS_PER_GROUP), schema)
            rest = whole.slice(ROWS_PER_GROUP)
            pending, buffered = rest.to_batches(), rest.num_rows
    if buffered:
        yield _typed(pa.Table.from_batches(pending), schema)


def _typed(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    # The driver's types (int4 for a count, its own field metadata) become the schema's.
    return rows.rename_columns(schema.names).cast(schema).combine_chunks()


def _read_arrow(table: Table, pseudonyms: Pseudonyms) -> pa.Table:
    """A whole (small) table in memory, sorted by its key."""
    sql, params = _select(table, pseudonyms, _expressions(table.columns))
    schema = _arrow_schema(table)
    groups = list(_groups(sql, params, schema))
    return pa.concat_tables(groups).combine_chunks() if groups else schema.empty_table()


def _lookup(keys: np.ndarray, wanted: np.ndarray) -> pa.Array:
    """Row of each wanted key in the sorted `keys`; null where it is missing (votes without
    scores)."""
    if not len(keys):
        return pa.nulls(len(wanted), pa.int64())
    rows = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    missing = keys[rows] != wanted
    validity = pa.py_buffer(np.packbits(~missing, bitorder="little")) if missing.any() else None
    data = pa.py_buffer(np.ascontiguousarray(rows.astype(np.int64)))
    return pa.Array.from_buffers(pa.int64(), len(rows), [validity, data])


def _int64_numpy(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The values of an int64 array without nulls, without a copy. (to_numpy() would do, but
    its first call imports pandas, 0.4 s of every export process.)"""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.null_count:
        raise ValueError("a lookup key is NULL")
    return np.frombuffer(array.buffers()[1], np.int64, len(array), array.offset * 8)


def _assemble(
    table: Table, facts: pa.Table, dimensions: dict[str, tuple[np.ndarray, pa.Table]]
) -> pa.Table:
    """The table's columns for one group of facts: each dimension's columns taken at the
    row of the fact's key (dimensions: key -> (its sorted keys, its rows))."""
    arrays = {name: facts.column(name) for name in facts.column_names}
    for key, (keys, dimension) in dimensions.items():
        rows = _lookup(keys, _int64_numpy(arrays[key]))
        for name in dimension.column_names[1:]:
            arrays[name] = dimension.column(name).take(rows)
    return pa.table([arrays[c.name] for c in table.columns], schema=_arrow_schema(table))
