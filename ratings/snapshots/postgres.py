"""The PostgreSQL path's COPY: libpq driven through the connection Django holds, the CSV
and JSONL writers that stream its bytes to the file, and the one transaction (one view of
the data) a build reads in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import psycopg
from django.db import connection, transaction
from psycopg import pq

from ratings.pseudonyms import Pseudonyms
from ratings.snapshots.schema import PROGRESS_EVERY, ProgressFn, Table, _audiofolder_columns
from ratings.snapshots.sql import csv_sql, jsonl_sql


def _copy_rows(sql: str, params: tuple) -> Iterator[memoryview]:
    """The messages of a COPY TO STDOUT, one row each. libpq is driven directly (through the
    psycopg 3 connection Django holds): psycopg's copy iterator costs about 0.4 s more per
    million rows, a tenth of an export. Callers close the generator (contextlib.closing), so
    an abandoned COPY is cancelled before the connection is used again."""
    connection.ensure_connection()
    conn = connection.connection
    with psycopg.ClientCursor(conn) as cursor:
        query = cursor.mogrify(sql, params)  # COPY cannot take server-side parameters
    pgconn = conn.pgconn
    pgconn.send_query(query.encode())
    result = pgconn.get_result()
    if result is None or result.status != pq.ExecStatus.COPY_OUT:
        _finish_command(pgconn, [result])
    finished = False
    try:
        while True:
            size, data = pgconn.get_copy_data(0)
            if size < 0:
                break
            yield data
        finished = True
    finally:
        if not finished:
            conn.cancel()
            while pgconn.get_copy_data(0)[0] >= 0:
                pass
        _finish_command(pgconn, [], raise_errors=finished)


def _finish_command(pgconn: pq.abc.PGconn, results: list, *, raise_errors: bool = True) -> None:
    while (result := pgconn.get_result()) is not None:
        results.append(result)
    fine = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.COPY_OUT)
    failed = [r for r in results if r is None or r.status not in fine]
    if failed and raise_errors:
        message = failed[0].error_message.decode(errors="replace") if failed[0] else "no result"
        raise psycopg.DatabaseError(message.strip())


def _write_copy(path: Path, sql: str, params: tuple, progress: ProgressFn, *, header: bool) -> int:
    rows = -1 if header else 0
    with path.open("wb") as out, closing(_copy_rows(sql, params)) as lines:
        for data in lines:
            out.write(data)
            rows += 1
            if rows % PROGRESS_EVERY == 0 and rows:
                progress(path.name, PROGRESS_EVERY)
    progress(path.name, max(rows, 0) % PROGRESS_EVERY)
    return max(rows, 0)


def _postgres_csv(path: Path, table: Table, pseudonyms: Pseudonyms, progress: ProgressFn) -> int:
    return _write_copy(path, *csv_sql(table, pseudonyms), progress, header=True)


def _postgres_jsonl(path: Path, table: Table, pseudonyms: Pseudonyms, progress: ProgressFn) -> int:
    sql, params = jsonl_sql(table, pseudonyms)
    return _write_copy(path, sql, params, progress, header=False)


def _postgres_metadata(
    path: Path, votes: Table, pseudonyms: Pseudonyms, progress: ProgressFn
) -> int:
    order = '({alias}."track_b_id" IS NULL), {alias}."vote_id"'
    sql, params = jsonl_sql(votes, pseudonyms, _audiofolder_columns(votes), order)
    return _write_copy(path, sql, params, progress, header=False)


@contextmanager
def _postgres_view() -> Iterator[None]:
    """Inside a caller's transaction (tests) this is a savepoint, so a failed query does not
    leave the caller's transaction unusable for recording the failure."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                # The text formats sort wide rows by id after the joins: in memory rather than
                # on disk (a million votes take about 400 MB; Parquet's sorts are far smaller).
                cursor.execute("SET LOCAL work_mem = '512MB'")
                cursor.execute("SET LOCAL TimeZone = 'UTC'")
        yield
