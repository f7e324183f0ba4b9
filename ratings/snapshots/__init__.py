"""Dataset snapshots: the votes, 1-5 ratings and tracks a researcher's filters select, written
once by a worker as JSONL, CSV, Parquet and a Hugging Face `audiofolder`, with a manifest that
hashes every file.

The rows are the ones `ratings.dataset` defines (its filters and vote queryset), but a snapshot
may hold millions of votes, so they never pass through Python objects one by one:

- JSONL and CSV: PostgreSQL renders every line (`COPY (SELECT ...) TO STDOUT`) and the bytes go
  straight to the file.
- Parquet: adbc-driver-postgresql reads each query straight into Arrow (binary COPY decoded
  in C++); the per-row facts (ids, choice, listening times, time) come from a narrow query,
  and the repeated text (prompt, campaign, versions, audio paths, pseudonyms) is looked up in
  small per-key tables; each block of ROWS_PER_GROUP rows becomes one row group.

Memory stays flat whatever the size, and the output depends only on the data and the
snapshot's salt (rows in id order, no build times in the files), so a rebuild gives
byte-identical files.

Rater ids never leave the database: each row carries HMAC-SHA256(salt, rater id), computed by
PostgreSQL. The salt is random per snapshot unless stable ids are asked for.

Other databases (SQLite, the embedded default of platform/run.sh) have none of this, so there
the same rows are read through the ORM in id order, CHUNK_ROWS at a time, and the same files are
written from Python (`portable.py`); `writing._backend()` is the one place that chooses.

The package, one module per job: `schema` (formats, tables, columns), `sql` (the SELECT and
COPY statements), `postgres` (the COPY driver, the text writers and the read transaction),
`postgres_parquet` (Parquet through
ADBC), `portable` (the same files from Python), `writing`
(the path switch and the audio folder), `manifest` and `services` (the entry points,
re-exported here). The raters' pseudonyms are `ratings.pseudonyms`.
"""

from ratings.snapshots.manifest import combined_sha256, file_sha256
from ratings.snapshots.schema import (
    FORMATS,
    SCHEMA_VERSION,
    SnapshotError,
)
from ratings.snapshots.services import (
    snapshot_build,
    snapshot_copy,
    snapshot_create,
    snapshot_file,
)

__all__ = [
    "FORMATS",
    "SCHEMA_VERSION",
    "SnapshotError",
    "combined_sha256",
    "file_sha256",
    "snapshot_build",
    "snapshot_copy",
    "snapshot_create",
    "snapshot_file",
]
