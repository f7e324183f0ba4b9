"""Writing a snapshot's files: the vendor switch between the two paths, the audio folder,
and every asked format of every table from one view of the database."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from django.core.files.storage import default_storage
from django.db import connection

from ratings.dataset import DataFilters
from ratings.models import DatasetSnapshot
from ratings.pseudonyms import Pseudonyms
from ratings.snapshots.manifest import _agreement
from ratings.snapshots.portable import (
    _portable_csv,
    _portable_jsonl,
    _portable_metadata,
    _portable_parquet,
    _portable_view,
)
from ratings.snapshots.postgres import (
    _postgres_csv,
    _postgres_jsonl,
    _postgres_metadata,
    _postgres_view,
    run_in_view,
)
from ratings.snapshots.postgres_parquet import _write_parquet
from ratings.snapshots.schema import AUDIO_EXTENSION, ProgressFn, Table, _tables


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


def _write_all(
    snapshot: DatasetSnapshot, directory: Path, progress: ProgressFn
) -> tuple[dict[str, int], dict[str, float | None]]:
    """Every asked file of every table, and the raters' agreement for the manifest: the
    Parquet files and the agreement as jobs the backend may run side by side, the text files
    (one COPY stream on the view's own connection) in this thread meanwhile."""
    backend = _backend()
    filters = DataFilters.from_json(snapshot.filters)
    tables = {t.name: t for t in _tables(filters, in_snapshot=snapshot.include_audio)}
    pseudonyms = Pseudonyms(snapshot.pseudonym_salt)
    text_writers = {"csv": backend.csv, "jsonl": backend.jsonl}
    jobs: dict[str, Callable[[], Any]] = {
        f"{name}.parquet": partial(backend.parquet, directory / f"{name}.parquet", table,
                                   pseudonyms, progress)
        for name, table in tables.items() if "parquet" in snapshot.formats
    }  # fmt: skip
    jobs["agreement"] = partial(_agreement, filters)
    counts: dict[str, int] = {}

    def text_files() -> None:
        for name, table in tables.items():
            for fmt in (f for f in snapshot.formats if f in text_writers):
                counts[name] = text_writers[fmt](directory / f"{name}.{fmt}", table, pseudonyms,
                                                 progress)  # fmt: skip
        if snapshot.include_audio:
            _write_audio(directory, tables["tracks"], progress)
        if "audiofolder" in snapshot.formats:
            counts["votes"] = _write_audiofolder(
                directory / "audiofolder", tables, pseudonyms, progress, backend
            )

    results = backend.run(jobs, text_files)
    for name, table in tables.items():
        if name not in counts:  # no text file of this table
            parquet = results.get(f"{name}.parquet")
            # Counted when only the audiofolder was asked for (it holds the votes alone).
            counts[name] = table.rows.count() if parquet is None else parquet
    return counts, results["agreement"]


# The two paths.

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
    run: Callable[[dict[str, Callable[[], Any]], Callable[[], None]], dict[str, Any]]


def _backend() -> Backend:
    """The vendor switch: PostgreSQL renders the files itself (COPY), every other database
    goes through the portable path, which is slower but needs nothing of the database."""
    return _postgres_backend() if connection.vendor == "postgresql" else _portable_backend()


# Built on each call, so that the module's functions are looked up when a build starts (tests
# replace some of them).
def _postgres_backend() -> Backend:
    return Backend(
        csv=_postgres_csv, jsonl=_postgres_jsonl, parquet=_write_parquet,
        metadata=_postgres_metadata, view=_postgres_view, run=run_in_view,
    )  # fmt: skip


def _portable_backend() -> Backend:
    return Backend(
        csv=_portable_csv, jsonl=_portable_jsonl, parquet=_portable_parquet,
        metadata=_portable_metadata, view=_portable_view, run=_run_in_order,
    )  # fmt: skip


def _run_in_order(
    jobs: dict[str, Callable[[], Any]], meanwhile: Callable[[], None]
) -> dict[str, Any]:
    """Other databases: one connection, one thing at a time."""
    meanwhile()
    return {name: job() for name, job in jobs.items()}


def _consistent_write(
    snapshot: DatasetSnapshot, directory: Path, progress: ProgressFn
) -> tuple[dict[str, int], dict[str, float | None]]:
    """All tables, and the agreement, from one view of the database: a vote cast mid-build
    is in none of them."""
    with _backend().view():
        return _write_all(snapshot, directory, progress)
