"""The PostgreSQL path: COPY driven through the connection Django holds (the CSV and JSONL
writers stream its bytes to the file), query results read straight into Arrow for Parquet
(`ArrowReader`, adbc-driver-postgresql on a connection of its own), and the one view of the
data all of them read: a read-only repeatable-read transaction whose snapshot every other
connection of the build imports, including those of the threads that write the Parquet files
and compute the agreement side by side (`run_in_view`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from contextvars import ContextVar, copy_context
from pathlib import Path
from typing import TypeVar

import psycopg
import pyarrow as pa
from django.db import connection, connections, transaction
from psycopg import pq
from psycopg.conninfo import make_conninfo

from ratings.pseudonyms import Pseudonyms
from ratings.snapshots.schema import PROGRESS_EVERY, ProgressFn, Table, _audiofolder_columns
from ratings.snapshots.sql import csv_sql, jsonl_sql

T = TypeVar("T")


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


# Both connections of a build run with these. The text formats sort wide rows by id after the
# joins: in memory rather than on disk (a million votes take about 400 MB). The tracks table
# selects the clips of the votes with two IN subqueries, which PostgreSQL hashes only when
# the hash fits in work_mem: with the default 4 MB it rescans the votes for every clip
# (47 s instead of a fraction of one for a million votes).
BUILD_SETTINGS = ("SET LOCAL work_mem = '512MB'", "SET LOCAL TimeZone = 'UTC'")


class ArrowReader:
    """Queries of the build read into Arrow by adbc-driver-postgresql, which decodes
    PostgreSQL's binary COPY in C++: a million rows a second where a row-by-row COPY loop in
    Python manages a third of that. It is a connection of its own, so it imports the build's
    exported snapshot and sees exactly what Django's connection sees; what a caller's open
    transaction wrote is not in that snapshot, which is why a build must not run inside one
    (`_postgres_view`)."""

    def __init__(self, snapshot_id: str) -> None:
        # Imported here: only a build needs the driver, and web processes import this module.
        # Its low-level API, not its DB-API module, which imports pyarrow.dataset and with it
        # pandas: 0.19 s at the start of every build.
        import adbc_driver_manager
        import adbc_driver_postgresql

        params = connection.get_connection_params()
        keys = ("dbname", "user", "password", "host", "port", "sslmode", "options")
        conninfo = make_conninfo(**{k: params[k] for k in keys if params.get(k)})
        self._database = adbc_driver_postgresql.connect(conninfo)
        self._connection = adbc_driver_manager.AdbcConnection(self._database)
        self._statement = adbc_driver_manager.AdbcStatement(self._connection)
        # An ADBC connection starts in autocommit mode: the driver sends no BEGIN of its own,
        # so this transaction is the session's until the ROLLBACK of close().
        self._run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self._run(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")
        for statement in BUILD_SETTINGS:
            self._run(statement)

    def _run(self, sql: str) -> None:
        self._statement.set_sql_query(sql)
        self._statement.execute_update()

    def batches(self, sql: str, params: tuple) -> Iterator[pa.RecordBatch]:
        """The query's rows, batch by batch; read each result to its end before the next."""
        connection.ensure_connection()
        with psycopg.ClientCursor(connection.connection) as client:
            query = client.mogrify(sql, params)  # Django's %s placeholders, bound client-side
        self._statement.set_sql_query(query)
        stream, _ = self._statement.execute_query()
        # Closed however the caller stops reading, so the driver releases the COPY stream.
        with pa.RecordBatchReader.from_stream(stream) as reader:
            yield from reader

    def close(self) -> None:
        try:
            self._run("ROLLBACK")  # nothing was written
        finally:
            self._statement.close()
            self._connection.close()
            self._database.close()


class _View:
    """One thread's share of the build's snapshot: the exported snapshot's id, and the Arrow
    reader that imports it, opened on first use (a build that writes no Parquet needs none)."""

    def __init__(self, snapshot_id: str) -> None:
        self.snapshot_id = snapshot_id
        self._reader: ArrowReader | None = None

    def reader(self) -> ArrowReader:
        if self._reader is None:
            self._reader = ArrowReader(self.snapshot_id)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


_view: ContextVar[_View | None] = ContextVar("snapshot_view", default=None)


def arrow_reader() -> ArrowReader:
    view = _view.get()
    if view is None:
        raise RuntimeError("Arrow reads need the build's view (_postgres_view)")
    return view.reader()


@contextmanager
def _postgres_view() -> Iterator[None]:
    """One read-only repeatable-read transaction for the whole build, its snapshot exported
    to every other connection of the build (Arrow readers, `run_in_view`'s threads). Not
    inside a caller's transaction: the other connections could not see what that transaction
    wrote, and the Parquet files would miss rows the text files hold (tests that build
    snapshots use transactional databases)."""
    if connection.in_atomic_block:
        raise RuntimeError("a snapshot build must not run inside a transaction")
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            for statement in BUILD_SETTINGS:
                cursor.execute(statement)
            cursor.execute("SELECT pg_export_snapshot()")
            (snapshot_id,) = cursor.fetchone()
        with _joined(_View(snapshot_id)):
            yield


@contextmanager
def _joined(view: _View) -> Iterator[None]:
    token = _view.set(view)
    try:
        yield
    finally:
        _view.reset(token)
        view.close()


# Threads of one build: the votes' Parquet file takes as long as all the other work together
# (ratings, tracks, agreement), so two threads finish in about half the time. PostgreSQL and
# the Arrow and Parquet libraries do the work outside the GIL.
BUILD_THREADS = 2


def run_in_view(jobs: dict[str, Callable[[], T]], meanwhile: Callable[[], None]) -> dict[str, T]:
    """Run the jobs on BUILD_THREADS threads, each with its own Django connection and Arrow
    reader that import the build's snapshot, so every job sees the same data as the rest of
    the build (`_postgres_view`), and `meanwhile` in this thread on the view's own
    connection. Jobs start in the order given; the first error is raised once all have
    stopped."""
    view = _view.get()
    if view is None:
        raise RuntimeError("run_in_view needs the build's view (_postgres_view)")
    with ThreadPoolExecutor(BUILD_THREADS, thread_name_prefix="snapshot") as pool:
        futures = {
            name: pool.submit(copy_context().run, _run_joined, view.snapshot_id, job)
            for name, job in jobs.items()
        }
        meanwhile()
        return {name: future.result() for name, future in futures.items()}


def _run_joined(snapshot_id: str, job: Callable[[], T]) -> T:
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot_id}'")
                for statement in BUILD_SETTINGS:
                    cursor.execute(statement)
            with _joined(_View(snapshot_id)):
                return job()
    finally:
        connections.close_all()  # this thread's connection, which nothing else will reuse
