"""The SQL of each output: the SELECT over a table's rows in key order, and the COPY
statements that render CSV and JSON lines in PostgreSQL."""

from __future__ import annotations

import pyarrow as pa

from ratings.pseudonyms import Pseudonyms
from ratings.snapshots.schema import TIMESTAMP, Column, Table


def _select(
    table: Table, pseudonyms: Pseudonyms, expressions: list[str], order: str = ""
) -> tuple[str, tuple]:
    """SELECT the expressions over the table's rows in id order, or in `order` (an ORDER BY
    list with {alias} for the row source)."""
    inner, inner_params = table.inner_sql()
    join, join_params = "", ()
    if any("p.pseudonym" in expression for expression in expressions):
        join = f" LEFT JOIN ({pseudonyms.sql()}) p ON p.id = q.rater_id"
        join_params = pseudonyms.params()
    order = (order or f'{{alias}}."{table.key}"').format(alias="q")
    query = f"SELECT {', '.join(expressions)} FROM ({inner}) q{join} ORDER BY {order}"
    return query, (*inner_params, *join_params)


def _text_expression(column: Column, *, json: bool) -> str:
    if column.type == TIMESTAMP:
        # ISO 8601 as PostgreSQL writes it in JSON, in the session's time zone, which Django
        # sets to UTC (USE_TZ): "2026-01-02T03:04:05.123456+00:00". to_char() would cost
        # several seconds per million rows.
        return column.sql if json else f"to_json({column.sql}) #>> '{{}}'"
    if column.type == pa.bool_() and not json:
        return f"CASE WHEN {column.sql} THEN 'true' WHEN NOT {column.sql} THEN 'false' END"
    return column.sql


def _named(expression: str, name: str) -> str:
    return f'{expression} AS "{name}"'


def csv_sql(table: Table, pseudonyms: Pseudonyms) -> tuple[str, tuple]:
    expressions = [_named(_text_expression(c, json=False), c.name) for c in table.columns]
    query, params = _select(table, pseudonyms, expressions)
    return f"COPY ({query}) TO STDOUT (FORMAT csv, HEADER)", params


def jsonl_sql(
    table: Table, pseudonyms: Pseudonyms, columns: list[Column] | None = None, order: str = ""
) -> tuple[str, tuple]:
    columns = columns or table.columns
    expressions = [_named(_text_expression(c, json=True), c.name) for c in columns]
    query, params = _select(table, pseudonyms, expressions, order)
    outer = (order or f'{{alias}}."{table.key}"').format(alias="t")
    # CSV mode with a quote and delimiter that JSON text never holds raw (PostgreSQL escapes
    # every control character in JSON) passes each line through untouched; text mode would
    # double the JSON's backslashes.
    return (
        f"COPY (SELECT row_to_json(t)::text FROM ({query}) t ORDER BY {outer}) "
        "TO STDOUT (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')",
        params,
    )
