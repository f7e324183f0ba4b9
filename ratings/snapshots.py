"""Dataset snapshots: the votes, 1-5 ratings and tracks a researcher's filters select, written
once by a worker as JSONL, CSV, Parquet and a Hugging Face `audiofolder`, with a manifest that
hashes every file.

The rows are the ones `ratings.dataset` defines (its filters and vote queryset), but a snapshot
may hold millions of votes, so they never pass through Python objects one by one:

- JSONL and CSV: PostgreSQL renders every line (`COPY (SELECT ...) TO STDOUT`) and the bytes go
  straight to the file.
- Parquet: the per-row facts (ids, choice, listening times, time) come as fixed-width binary
  COPY rows that numpy reads in blocks, and the repeated text (prompt, campaign, versions,
  audio paths, pseudonyms) is looked up in small per-key tables; each block of ROWS_PER_GROUP
  rows becomes one row group.

Memory stays flat whatever the size, and the output depends only on the data and the
snapshot's salt (rows in id order, no build times in the files), so a rebuild gives
byte-identical files.

Rater ids never leave the database: each row carries HMAC-SHA256(salt, rater id), computed by
PostgreSQL. The salt is random per snapshot unless stable ids are asked for.

Other databases (SQLite, the embedded default of platform/run.sh) have none of this, so there
the same rows are read through the ORM in id order, CHUNK_ROWS at a time, and the same files are
written from Python (see "the portable path"); _backend() is the one place that chooses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as parquet
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import F, FilteredRelation, Q, QuerySet
from django.utils import timezone
from psycopg import pq

from generation.models import GeneratorVersion, Prompt, Track
from ratings.dataset import DataFilters, filtered_votes
from ratings.models import Campaign, DatasetSnapshot, MosRating, Pair, Rater, Vote

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "parquet", "audiofolder")
TABLES = ("votes", "ratings", "tracks")
SCHEMA_VERSION = 1
PSEUDONYM_HEX = 16
MANIFEST_NAME = "manifest.json"
# Rows per Parquet row group: the unit that is parsed and held in memory at once (~30 MB).
ROWS_PER_GROUP = 100_000
PROGRESS_EVERY = 10_000
# Rows fetched per round trip by the portable path (.iterator(chunk_size=...)).
CHUNK_ROWS = 2_000
ProgressFn = Callable[[str, int], None]


class SnapshotError(ValueError):
    """Bad input for a snapshot (the API answers 400 and nothing is stored), or a file that is
    not part of a finished snapshot."""


# --- the tables ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One output column. `source` is its SQL over the inner query `q` (and the pseudonym
    table `p`); the default is the inner column of the same name. `python` is the same value
    computed from an inner row (a dict, with the rater's pseudonym under PSEUDONYM) by the
    portable path; the default is again the inner column of the same name.

    For Parquet, a column with a `lookup` is taken from a small dimension table keyed by that
    column (the pair of a vote, the pseudonym of a rater), and the others are facts read as
    fixed-width binary; `codes` lists the values of a string fact sent as a small integer, and
    a nullable fact is sent as -1 for NULL (facts are ids, counts and scores: never negative).
    """

    name: str
    type: pa.DataType
    source: str = ""
    lookup: str = ""
    nullable: bool = False
    codes: tuple[str, ...] = ()
    python: Callable[[dict[str, Any]], Any] | None = field(default=None, compare=False)

    @property
    def sql(self) -> str:
        return self.source or f'q."{self.name}"'

    def value(self, row: dict[str, Any]) -> Any:
        return self.python(row) if self.python else row[self.name]


TIMESTAMP = pa.timestamp("us", tz="UTC")
INT64 = pa.int64()
STR = pa.string()


def _audio_column(
    name: str, track_id: str, stored: str, *, in_snapshot: bool, lookup: str = ""
) -> Column:
    """The audio path of a clip: its file inside the snapshot (see _audio_name_sql) when audio
    is included, else the name the platform's storage knows it by."""
    if not in_snapshot:
        return Column(name, STR, f'q."{stored}"', lookup=lookup, python=lambda row: row[stored])
    return Column(
        name, STR, _audio_name_sql(f'q."{track_id}"', f'q."{stored}"'), lookup=lookup,
        python=lambda row: _audio_name(row[track_id], row[stored]),
    )  # fmt: skip


AUDIO_EXTENSION = "[.][A-Za-z0-9]+$"


def _audio_name_sql(track_id: str, stored: str) -> str:
    # Named by track id, which is unique and already in the rows; the extension is kept so
    # audio readers can tell the codec.
    return (
        f"CASE WHEN {stored} IS NOT NULL THEN 'audio/' || {track_id}::text || "
        f"coalesce(substring({stored} from '{AUDIO_EXTENSION}'), '') END"
    )


def _audio_name(track_id: int, stored: str | None) -> str | None:
    """_audio_name_sql in Python."""
    if stored is None:
        return None
    extension = re.search(AUDIO_EXTENSION, stored)
    return f"audio/{track_id}{extension.group() if extension else ''}"


# The key under which the portable path puts a row's pseudonym (the SQL's p.pseudonym).
PSEUDONYM = "pseudonym"
RATER = Column("rater", STR, "p.pseudonym", lookup="rater_id", python=lambda row: row[PSEUDONYM])


def _vote_columns(*, in_snapshot: bool) -> list[Column]:
    pair = {"lookup": "pair_id"}
    return [
        Column("vote_id", INT64),
        Column("pair_id", INT64),
        Column("campaign_id", INT64, **pair),
        Column("campaign_name", STR, **pair),
        Column("protocol", STR, **pair),
        Column("prompt_id", INT64, **pair),
        Column("prompt_text", STR, **pair),
        Column("track_a_id", INT64, **pair),
        Column("track_b_id", INT64, **pair),
        _audio_column("audio_a", "track_a_id", "stored_a", in_snapshot=in_snapshot, **pair),
        _audio_column("audio_b", "track_b_id", "stored_b", in_snapshot=in_snapshot, **pair),
        Column("version_a", STR, **pair),
        Column("version_b", STR, **pair),
        Column("left_is_a", pa.bool_()),
        Column("choice", STR, nullable=True, codes=tuple(Vote.Choice.values)),
        Column("score_a", pa.int16(), lookup="vote_id", nullable=True),
        Column("score_b", pa.int16(), lookup="vote_id", nullable=True),
        Column("listen_ms_a", pa.int32()),
        Column("listen_ms_b", pa.int32(), nullable=True),
        Column("elapsed_ms", pa.int32()),
        # "counted" unless the filters asked for flagged or rejected votes too.
        Column("status", STR, codes=tuple(Vote.Status.values)),
        RATER,
        Column("created_at", TIMESTAMP),
    ]


def _rating_columns() -> list[Column]:
    track, campaign = {"lookup": "track_id"}, {"lookup": "campaign_id"}
    return [
        Column("rating_id", INT64),
        Column("vote_id", INT64),
        Column("campaign_id", INT64),
        Column("protocol", STR, **campaign),
        Column("track_id", INT64),
        Column("prompt_id", INT64, **track),
        Column("prompt_text", STR, **track),
        Column("version", STR, **track),
        Column("score", pa.int16()),
        Column("listen_ms", pa.int32()),
        RATER,
        Column("created_at", TIMESTAMP),
    ]


def _track_columns(*, in_snapshot: bool) -> list[Column]:
    return [
        Column("track_id", INT64),
        Column("prompt_id", INT64),
        Column("prompt_text", STR),
        Column("version", STR),
        Column("seed", INT64),
        Column("duration_seconds", pa.float64()),
        Column("sample_rate", pa.int32()),
        Column("mime_type", STR),
        _audio_column("audio", "track_id", "stored", in_snapshot=in_snapshot),
        Column("caption", STR),
        Column("created_at", TIMESTAMP),
    ]


@dataclass(frozen=True)
class Table:
    """One table of a snapshot: the ORM query of its rows (which carries the filters) and the
    columns written from it. `facts` is a narrower query of the same rows for Parquet, whose
    other columns come from `dimensions`, one small table per lookup key."""

    name: str
    rows: QuerySet
    key: str
    columns: list[Column]
    facts: QuerySet | None = None
    dimensions: dict[str, Table] = field(default_factory=dict)

    def inner_sql(self, rows: QuerySet | None = None) -> tuple[str, tuple[Any, ...]]:
        return (self.rows if rows is None else rows).order_by().query.sql_with_params()

    def fact_columns(self) -> list[Column]:
        return _fact_columns(self.columns, self.dimensions)


def _fact_columns(columns: list[Column], keys: Sequence[str]) -> list[Column]:
    # Lookup keys that are not columns themselves (the rater id) are read but not written.
    facts = [c for c in columns if not c.lookup]
    names = {c.name for c in facts}
    return facts + [Column(key, INT64) for key in keys if key not in names]


def _values(queryset: QuerySet, columns: dict[str, str]) -> QuerySet:
    # .values() refuses an alias equal to a field name, so those are passed by name.
    same = [name for name, path in columns.items() if name == path]
    return queryset.values(*same, **{n: F(p) for n, p in columns.items() if n != p})


def _subset(columns: dict[str, str], names: Sequence[str]) -> dict[str, str]:
    return {name: columns[name] for name in names}


VOTE_PATHS = {
    "vote_id": "id", "pair_id": "pair_id", "campaign_id": "campaign_id",
    "campaign_name": "campaign__name", "protocol": "campaign__protocol",
    "prompt_id": "pair__prompt_id", "prompt_text": "pair__prompt__text",
    "track_a_id": "pair__track_a_id", "track_b_id": "pair__track_b_id",
    "stored_a": "pair__track_a__audio", "stored_b": "pair__track_b__audio",
    "version_a": "pair__track_a__generator_version__name",
    "version_b": "pair__track_b__generator_version__name",
    "left_is_a": "left_is_a", "choice": "choice", "score_a": "rating_a__score",
    "score_b": "rating_b__score", "listen_ms_a": "listen_ms_a", "listen_ms_b": "listen_ms_b",
    "elapsed_ms": "elapsed_ms", "status": "status", "rater_id": "rater_id",
    "created_at": "created_at",
}  # fmt: skip
PAIR_FIELDS = (
    "campaign_id", "campaign_name", "protocol", "prompt_id", "prompt_text", "track_a_id",
    "track_b_id", "stored_a", "stored_b", "version_a", "version_b",
)  # fmt: skip
RATING_PATHS = {
    "rating_id": "id", "vote_id": "vote_id", "campaign_id": "campaign_id",
    "protocol": "campaign__protocol", "track_id": "track_id", "prompt_id": "track__prompt_id",
    "prompt_text": "track__prompt__text", "version": "track__generator_version__name",
    "score": "score", "listen_ms": "listen_ms", "rater_id": "rater_id",
    "created_at": "created_at",
}  # fmt: skip
TRACK_PATHS = {
    "track_id": "id", "prompt_id": "prompt_id", "prompt_text": "prompt__text",
    "version": "generator_version__name", "seed": "seed", "duration_seconds": "duration_seconds",
    "sample_rate": "sample_rate", "mime_type": "mime_type", "stored": "audio",
    "caption": "caption", "created_at": "created_at",
}  # fmt: skip


def _tables(filters: DataFilters, *, in_snapshot: bool) -> list[Table]:
    votes = filtered_votes(filters)
    return [
        _vote_table(votes, _campaigns(filters), in_snapshot=in_snapshot),
        _rating_table(MosRating.objects.filter(vote__in=votes), _campaigns(filters)),
        Table(
            "tracks",
            _values(
                Track.objects.filter(
                    Q(pk__in=votes.values("pair__track_a_id"))
                    | Q(pk__in=votes.values("pair__track_b_id"))
                ),
                TRACK_PATHS,
            ),
            "track_id",
            _track_columns(in_snapshot=in_snapshot),
        ),
    ]


def _campaigns(filters: DataFilters) -> QuerySet[Campaign]:
    """The campaigns the filters can select from: the scope of the Parquet dimension tables.
    They are looked up by key, so they may hold more rows than needed, and scoping them by
    campaign only spares PostgreSQL a pass over the filtered votes for each one."""
    campaigns = Campaign.objects.all()
    if filters.campaign_ids:
        campaigns = campaigns.filter(pk__in=filters.campaign_ids)
    if filters.protocols:
        campaigns = campaigns.filter(protocol__in=filters.protocols)
    return campaigns


def _vote_table(
    votes: QuerySet[Vote], campaigns: QuerySet[Campaign], *, in_snapshot: bool
) -> Table:
    columns = _vote_columns(in_snapshot=in_snapshot)
    pair_paths = {"pair_id": "id"} | {
        name: path.removeprefix("pair__") if path.startswith("pair__") else path
        for name, path in _subset(VOTE_PATHS, PAIR_FIELDS).items()
    }
    pairs = Pair.objects.filter(campaign__in=campaigns)
    # Only the scored protocols have ratings: a lookup by vote id spares the other votes the
    # two rating joins.
    scored = Vote.objects.filter(campaign__in=campaigns).exclude(
        campaign__protocol=Campaign.Protocol.PREFERENCE
    )
    dimensions = {
        "pair_id": _dimension(pairs, pair_paths, "pair_id", columns),
        "vote_id": _dimension(
            _with_scores(scored), {"vote_id": "id", "score_a": "rating_a__score",
                                   "score_b": "rating_b__score"}, "vote_id", columns,
        ),
        "rater_id": _rater_dimension(),
    }  # fmt: skip
    facts = [c.name for c in _fact_columns(columns, list(dimensions))]
    return Table(
        "votes", _values(_with_scores(votes), VOTE_PATHS), "vote_id", columns,
        facts=_values(votes, _subset(VOTE_PATHS, facts)), dimensions=dimensions,
    )  # fmt: skip


def _with_scores(votes: QuerySet[Vote]) -> QuerySet[Vote]:
    # A vote has at most one rating per clip (rating_unique_per_rater), so joining each side's
    # rating keeps one row per vote.
    return votes.annotate(
        rating_a=FilteredRelation("ratings", condition=Q(ratings__track=F("pair__track_a"))),
        rating_b=FilteredRelation("ratings", condition=Q(ratings__track=F("pair__track_b"))),
    )


def _rating_table(ratings: QuerySet[MosRating], campaigns: QuerySet[Campaign]) -> Table:
    columns = _rating_columns()
    pairs = Pair.objects.filter(campaign__in=campaigns)
    tracks = Track.objects.filter(
        Q(pk__in=pairs.values("track_a_id")) | Q(pk__in=pairs.values("track_b_id"))
    )
    track_paths = {"track_id": "id"} | _subset(TRACK_PATHS, ["prompt_id", "prompt_text", "version"])
    campaign_paths = {"campaign_id": "id", "protocol": "protocol"}
    dimensions = {
        "campaign_id": _dimension(campaigns, campaign_paths, "campaign_id", columns),
        "track_id": _dimension(tracks, track_paths, "track_id", columns),
        "rater_id": _rater_dimension(),
    }
    facts = [c.name for c in _fact_columns(columns, list(dimensions))]
    return Table(
        "ratings", _values(ratings, RATING_PATHS), "rating_id", columns,
        facts=_values(ratings, _subset(RATING_PATHS, facts)), dimensions=dimensions,
    )  # fmt: skip


def _dimension(rows: QuerySet, paths: dict[str, str], key: str, columns: list[Column]) -> Table:
    looked_up = [c for c in columns if c.lookup == key]
    return Table(key, _values(rows, paths), key, [Column(key, INT64), *looked_up])


def _rater_dimension() -> Table:
    # Every rater: a hash each, and far fewer raters than votes.
    return Table("rater_id", _values(Rater.objects.all(), {"rater_id": "id"}), "rater_id",
                 [Column("rater_id", INT64), RATER])  # fmt: skip


# --- SQL for each output -------------------------------------------------------------------


@dataclass(frozen=True)
class Pseudonyms:
    """HMAC-SHA256(salt, str(rater id)) in SQL. PostgreSQL has sha256() but no hmac() without
    pgcrypto, so the HMAC is spelled out: H((K ^ opad) || H((K ^ ipad) || message))."""

    salt: str

    def params(self) -> tuple[bytes, bytes]:
        key = bytes.fromhex(self.salt).ljust(64, b"\0")  # keys up to the block size are padded
        return bytes(b ^ 0x5C for b in key), bytes(b ^ 0x36 for b in key)

    def sql(self) -> str:
        inner = "sha256(%s || convert_to(r.id::text, 'UTF8'))"
        return (
            f"SELECT r.id, left(encode(sha256(%s || {inner}), 'hex'), {PSEUDONYM_HEX}) "
            # OFFSET 0 keeps the subquery whole: flattened, the hash would run once per row
            # instead of once per rater.
            f'AS pseudonym FROM "{Rater._meta.db_table}" r OFFSET 0'
        )

    def of(self, rater_id: int) -> str:
        """The same pseudonym computed in Python (for tests and for checking a claim)."""
        digest = hmac.new(bytes.fromhex(self.salt), str(rater_id).encode(), hashlib.sha256)
        return digest.hexdigest()[:PSEUDONYM_HEX]


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


def _parquet_sql(table: Table, pseudonyms: Pseudonyms) -> tuple[str, tuple]:
    expressions = []
    for column in table.columns:
        expression = column.sql
        if column.type == TIMESTAMP:
            # Exact microseconds since the epoch: pyarrow casts them to a timestamp losslessly.
            expression = f"(extract(epoch from {expression}) * 1000000)::bigint"
        expressions.append(_named(expression, column.name))
    query, params = _select(table, pseudonyms, expressions)
    return f"COPY ({query}) TO STDOUT (FORMAT csv)", params


# --- writers -------------------------------------------------------------------------------


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


def _write_audio(directory: Path, table: Table, progress: ProgressFn) -> None:
    """Each track's audio as audio/<track id><ext>: hard-linked when the storage is a local
    folder on the same file system (no copy, no extra space), else copied."""
    (directory / "audio").mkdir(parents=True, exist_ok=True)
    for track_id, stored in table.rows.order_by("track_id").values_list("track_id", "stored"):
        extension = re.search(AUDIO_EXTENSION, stored)  # as _audio_name_sql names it
        target = directory / f"audio/{track_id}{extension.group() if extension else ''}"
        try:
            os.link(default_storage.path(stored), target)
        except (NotImplementedError, OSError):
            with default_storage.open(stored, "rb") as source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
        progress("audio", 1)


def _audiofolder_columns(votes: Table) -> list[Column]:
    """The vote columns with audio_a / audio_b as audio_a_file_name / audio_b_file_name, always
    the clip's file inside the folder."""
    return [
        Column(f"{c.name}_file_name", c.type, _audio_name_sql(f'q."track_{c.name[-1]}_id"',
                                                              f'q."stored_{c.name[-1]}"'),
               python=_audio_file_name(c.name[-1]))
        if c.name in ("audio_a", "audio_b") else c
        for c in votes.columns
    ]  # fmt: skip


def _audio_file_name(side: str) -> Callable[[dict[str, Any]], str | None]:
    return lambda row: _audio_name(row[f"track_{side}_id"], row[f"stored_{side}"])


def _write_audiofolder(
    directory: Path,
    tables: dict[str, Table],
    pseudonyms: Pseudonyms,
    progress: ProgressFn,
    backend: Backend,
) -> int:
    """A folder `datasets.load_dataset("audiofolder", data_dir=...)` reads: the votes in
    metadata.jsonl, whose audio_a_file_name / audio_b_file_name become two Audio columns.
    Two-clip votes come first: datasets types the columns from the first rows, and a first
    block of single-clip (MOS) votes would make audio_b_file_name a column of nulls."""
    directory.mkdir()
    _write_audio(directory, tables["tracks"], progress)
    return backend.metadata(directory / "metadata.jsonl", tables["votes"], pseudonyms, progress)


def _write_all(snapshot: DatasetSnapshot, directory: Path, progress: ProgressFn) -> dict[str, int]:
    backend = _backend()
    filters = DataFilters.from_json(snapshot.filters)
    tables = {t.name: t for t in _tables(filters, in_snapshot=snapshot.include_audio)}
    pseudonyms = Pseudonyms(snapshot.pseudonym_salt)
    writers = {"csv": backend.csv, "jsonl": backend.jsonl, "parquet": backend.parquet}
    counts: dict[str, int] = {}
    for name, table in tables.items():
        for fmt in (f for f in snapshot.formats if f in writers):
            path = directory / f"{name}.{fmt}"
            counts[name] = writers[fmt](path, table, pseudonyms, progress)
    if snapshot.include_audio:
        _write_audio(directory, tables["tracks"], progress)
    if "audiofolder" in snapshot.formats:
        counts["votes"] = _write_audiofolder(
            directory / "audiofolder", tables, pseudonyms, progress, backend
        )
    for name, table in tables.items():
        if name not in counts:  # only the audiofolder was asked for
            counts[name] = table.rows.count()
    return counts


# --- the two paths ---------------------------------------------------------------------------

TableWriter = Callable[[Path, Table, Pseudonyms, ProgressFn], int]


@dataclass(frozen=True)
class Backend:
    """How one kind of database writes each file; each writer returns its row count.
    `metadata` writes the audiofolder's metadata.jsonl from the votes table."""

    csv: TableWriter
    jsonl: TableWriter
    parquet: TableWriter
    metadata: TableWriter
    view: Callable[[], AbstractContextManager[None]]


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


@contextmanager
def _portable_view() -> Iterator[None]:
    """One view of the database for the build: a savepoint inside a caller's transaction (as
    _postgres_view), else a transaction that only reads."""
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


def _backend() -> Backend:
    """The vendor switch: PostgreSQL renders the files itself (COPY), every other database
    goes through the portable path, which is slower but needs nothing of the database."""
    return _postgres_backend() if connection.vendor == "postgresql" else _portable_backend()


# Built on each call, so that the module's functions are looked up when a build starts (tests
# replace some of them).
def _postgres_backend() -> Backend:
    return Backend(
        csv=_postgres_csv, jsonl=_postgres_jsonl, parquet=_write_parquet,
        metadata=_postgres_metadata, view=_postgres_view,
    )  # fmt: skip


def _portable_backend() -> Backend:
    return Backend(
        csv=_portable_csv, jsonl=_portable_jsonl, parquet=_portable_parquet,
        metadata=_portable_metadata, view=_portable_view,
    )  # fmt: skip


# --- the portable path ----------------------------------------------------------------------
# The same rows as the SQL above (the tables' ORM queries, in key order), turned into the same
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


# --- manifest ------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def combined_sha256(files: dict[str, str]) -> str:
    """One hash of all files: of their sorted relative paths and hashes."""
    digest = hashlib.sha256()
    for relative, sha in sorted(files.items()):
        digest.update(f"{relative}\0{sha}\n".encode())
    return digest.hexdigest()


def code_version() -> str:
    try:
        package = metadata.version("musicpref")
    except metadata.PackageNotFoundError:
        package = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=settings.BASE_DIR, capture_output=True,
            text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return f"{package}+{commit or 'unknown'}"


def _manifest(snapshot: DatasetSnapshot, directory: Path, counts: dict[str, int]) -> dict:
    # No build time and no salt: the manifest of a rebuild on the same data is byte-identical.
    files = {
        path.relative_to(directory).as_posix(): file_sha256(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
    in_snapshot = snapshot.include_audio
    columns = {
        "votes": [c.name for c in _vote_columns(in_snapshot=in_snapshot)],
        "ratings": [c.name for c in _rating_columns()],
        "tracks": [c.name for c in _track_columns(in_snapshot=in_snapshot)],
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "code_version": code_version(),
        "snapshot_id": snapshot.pk,
        "name": snapshot.name,
        "filters": snapshot.filters,
        "formats": snapshot.formats,
        "include_audio": snapshot.include_audio,
        "stable_rater_ids": snapshot.stable_rater_ids,
        "rater_pseudonym": f"hmac-sha256 of the rater id, first {PSEUDONYM_HEX} hex digits",
        "row_counts": counts,
        "agreement": _agreement(snapshot),
        "columns": columns,
        "files": files,
        "sha256": combined_sha256(files),
    }


def _agreement(snapshot: DatasetSnapshot) -> dict[str, float | None]:
    """Krippendorff's alpha of each campaign in the snapshot over its counted votes (the
    campaign's own agreement, whatever the snapshot's other filters)."""
    from ratings.selectors import campaign_agreement

    filters = DataFilters.from_json(snapshot.filters)
    votes = filtered_votes(filters).order_by().values_list("campaign_id", flat=True)
    campaign_ids = sorted(votes.distinct())
    alphas = campaign_agreement(campaign_ids)
    return {str(pk): alphas.get(pk) for pk in campaign_ids}


# --- services ------------------------------------------------------------------------------


def _validate(filters: DataFilters, formats: Sequence[str], name: str) -> list[str]:
    if isinstance(formats, str) or not formats:
        raise SnapshotError("choose at least one format")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise SnapshotError(f"unknown formats {', '.join(unknown)}; use {', '.join(FORMATS)}")
    if len(name) > 200:
        raise SnapshotError("the name is longer than 200 characters")
    if filters.since and filters.until and filters.since >= filters.until:
        raise SnapshotError("since must be before until")
    if any(moment and timezone.is_naive(moment) for moment in (filters.since, filters.until)):
        raise SnapshotError("since and until need a time zone")
    bad_protocols = sorted(set(filters.protocols) - set(Campaign.Protocol.values))
    if bad_protocols:
        raise SnapshotError(f"unknown protocols: {', '.join(bad_protocols)}")
    bad_sources = sorted(set(filters.prompt_sources) - set(Prompt.Source.values))
    if bad_sources:
        raise SnapshotError(f"unknown prompt sources: {', '.join(bad_sources)}")
    _require_existing(Campaign, filters.campaign_ids, "campaigns")
    _require_existing(GeneratorVersion, filters.version_ids, "generator versions")
    for name in ("min_rater_reliability", "min_gold_accuracy"):
        threshold = getattr(filters, name)
        if threshold is not None and not 0 <= threshold <= 1:
            raise SnapshotError(f"{name} must lie between 0 and 1")
    statuses = filters.vote_statuses
    if isinstance(statuses, str) or not statuses or set(statuses) - set(Vote.Status.values):
        raise SnapshotError(f"vote_statuses must be a non-empty list of {', '.join(Vote.Status)}")
    return [fmt for fmt in FORMATS if fmt in formats]  # one order, whatever the caller's


def _require_existing(model: type, ids: Sequence[int], label: str) -> None:
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise SnapshotError(f"{label} are given by integer id")
    missing = sorted(set(ids) - set(model.objects.filter(pk__in=ids).values_list("pk", flat=True)))
    if missing:
        raise SnapshotError(f"unknown {label}: {', '.join(map(str, missing))}")


def stable_salt() -> str:
    """The same salt for every stable-id snapshot of this installation, derived from the
    SECRET_KEY so that it cannot be recomputed without it."""
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, b"musicpref dataset snapshot rater ids", hashlib.sha256).hexdigest()


def snapshot_create(
    *,
    filters: DataFilters,
    formats: Sequence[str],
    include_audio: bool = False,
    stable_rater_ids: bool = False,
    name: str = "",
    created_by: Any = None,
    queue: bool = True,
) -> DatasetSnapshot:
    """Record a snapshot to build; with queue=True a worker builds it once this commits."""
    from ratings import tasks

    formats = _validate(filters, formats, name)
    with transaction.atomic():
        snapshot = DatasetSnapshot.objects.create(
            name=name, filters=filters.to_json(), formats=formats, include_audio=include_audio,
            stable_rater_ids=stable_rater_ids,
            pseudonym_salt=stable_salt() if stable_rater_ids else secrets.token_hex(32),
            created_by=created_by,
        )  # fmt: skip
        if queue:
            tasks.build_snapshot.delay_on_commit(snapshot.pk)
    return snapshot


def snapshot_build(*, snapshot_id: int, progress: ProgressFn | None = None) -> DatasetSnapshot:
    """Write the snapshot's files into a hidden folder and move it into place when complete,
    so a half-built snapshot is never visible; a failure leaves no files and records why."""
    DatasetSnapshot.objects.filter(pk=snapshot_id).update(
        status=DatasetSnapshot.Status.RUNNING, started_at=timezone.now(), error=""
    )
    snapshot = DatasetSnapshot.objects.get(pk=snapshot_id)
    root = Path(settings.SNAPSHOT_DIR)
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f".{snapshot.directory.name}.partial-{secrets.token_hex(4)}"
    try:
        partial.mkdir()
        counts = _consistent_write(snapshot, partial, progress or (lambda step, rows: None))
        manifest = _manifest(snapshot, partial, counts)
        (partial / MANIFEST_NAME).write_text(_json_text(manifest))
        _replace_directory(partial, snapshot.directory)
    except Exception as exc:
        logger.exception("dataset snapshot %s failed", snapshot_id)
        shutil.rmtree(partial, ignore_errors=True)
        DatasetSnapshot.objects.filter(pk=snapshot_id).update(
            status=DatasetSnapshot.Status.FAILED, error=repr(exc), finished_at=timezone.now()
        )
        snapshot.refresh_from_db()
        return snapshot
    DatasetSnapshot.objects.filter(pk=snapshot_id).update(
        status=DatasetSnapshot.Status.FINISHED, row_counts=counts, manifest=manifest,
        finished_at=timezone.now(),
    )  # fmt: skip
    snapshot.refresh_from_db()
    return snapshot


def _consistent_write(
    snapshot: DatasetSnapshot, directory: Path, progress: ProgressFn
) -> dict[str, int]:
    """All tables from one view of the database: a vote cast mid-build is in none of them."""
    with _backend().view():
        return _write_all(snapshot, directory, progress)


def _json_text(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _replace_directory(partial: Path, final: Path) -> None:
    if final.exists():  # a rebuild: the old files go only once the new ones are complete
        old = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
        final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(final)


def snapshot_file(snapshot: DatasetSnapshot, relative_path: str) -> Path:
    """The file of a finished snapshot at `relative_path`; anything its manifest does not list
    (other files, `..`, absolute paths) is refused."""
    if snapshot.status != DatasetSnapshot.Status.FINISHED:
        raise SnapshotError("the snapshot is not finished")
    if relative_path not in snapshot.files():
        raise SnapshotError(f"{relative_path!r} is not a file of this snapshot")
    directory = snapshot.directory.resolve()
    path = (directory / relative_path).resolve()
    if not path.is_relative_to(directory) or not path.is_file():
        raise SnapshotError(f"{relative_path!r} is not a file of this snapshot")
    return path


def snapshot_copy(snapshot: DatasetSnapshot, destination: Path) -> Path:
    """Copy a finished snapshot's files to `destination` (hard links where possible) and
    return the copied manifest's path."""
    if snapshot.status != DatasetSnapshot.Status.FINISHED:
        raise SnapshotError("the snapshot is not finished")
    shutil.copytree(
        snapshot.directory, destination, copy_function=_link_or_copy, dirs_exist_ok=True
    )
    return destination / MANIFEST_NAME


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
