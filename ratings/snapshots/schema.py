"""What a snapshot holds: its formats and tables, each table's columns (their SQL, their
Arrow type, and their value computed in Python), the ORM queries of the rows, and the
raters' pseudonyms."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from django.db.models import Exists, F, FilteredRelation, OuterRef, Q, QuerySet

from generation.models import Track
from ratings.dataset import DataFilters, filtered_votes
from ratings.models import Campaign, MosRating, Pair, Rater, Vote
from ratings.vote_fields import VOTE_FIELDS, VoteField, vote_layout

FORMATS = ("jsonl", "csv", "parquet", "audiofolder")
TABLES = ("votes", "ratings", "tracks")
SCHEMA_VERSION = 1
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


@dataclass(frozen=True)
class Column:
    """One output column. `source` is its SQL over the inner query `q` (and the pseudonym
    table `p`); the default is the inner column of the same name. `python` is the same value
    computed from an inner row (a dict, with the rater's pseudonym under PSEUDONYM) by the
    portable path; the default is again the inner column of the same name.

    For Parquet, a column with a `lookup` is taken from a small dimension table keyed by that
    column (the pair of a vote, the pseudonym of a rater); the others are facts, read from the
    table's narrow query.
    """

    name: str
    type: pa.DataType
    source: str = ""
    lookup: str = ""
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


ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": INT64, "int32": pa.int32(), "int16": pa.int16(), "bool": pa.bool_(), "string": STR,
    "timestamp": TIMESTAMP,
}  # fmt: skip
# The scores of a vote, from its two ratings (see _with_scores).
SCORE_PATHS = {"score_a": "rating_a__score", "score_b": "rating_b__score"}


def _vote_columns(*, in_snapshot: bool) -> list[Column]:
    """The shared vote fields (ratings.vote_fields) and the snapshot's own: the pair, the
    campaign's name, the clips' audio, the vote's status and the rater's pseudonym."""
    pair = {"lookup": "pair_id"}
    own = {
        "vote_id": [Column("pair_id", INT64)],
        "campaign_id": [Column("campaign_name", STR, **pair)],
        "track_b_id": [
            _audio_column("audio_a", "track_a_id", "stored_a", in_snapshot=in_snapshot, **pair),
            _audio_column("audio_b", "track_b_id", "stored_b", in_snapshot=in_snapshot, **pair),
        ],
        # "counted" unless the filters asked for flagged or rejected votes too.
        "elapsed_ms": [Column("status", STR), RATER],
    }
    return vote_layout(_shared_vote_column, after=own)


def _shared_vote_column(field: VoteField) -> Column:
    # Parquet reads the pair's fields once per pair and the scores once per scored vote.
    lookup = "pair_id" if field.of_pair else "vote_id" if field.name in SCORE_PATHS else ""
    return Column(field.name, ARROW_TYPES[field.type], lookup=lookup)


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


def _vote_path(field: VoteField) -> tuple[str, str]:
    return field.name, field.path or SCORE_PATHS[field.name]


# The inner query's vote columns: the shared fields', and those the snapshot's own columns
# are made of (the audio from the clips' stored names, the pseudonym from the rater's id).
VOTE_PATHS = dict(
    vote_layout(
        _vote_path,
        after={
            "vote_id": [("pair_id", "pair_id")],
            "campaign_id": [("campaign_name", "campaign__name")],
            "track_b_id": [
                ("stored_a", "pair__track_a__audio"),
                ("stored_b", "pair__track_b__audio"),
            ],
            "elapsed_ms": [("status", "status"), ("rater_id", "rater_id")],
        },
    )
)
# The vote columns that belong to its pair: the pair dimension's.
PAIR_FIELDS = tuple(
    name
    for name in VOTE_PATHS
    if name in ("campaign_name", "stored_a", "stored_b")
    or name in {field.name for field in VOTE_FIELDS if field.of_pair}
)
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
    """The tables of a snapshot with these filters. Call it inside the build's view: it reads
    which of the campaigns ask for scores."""
    votes = filtered_votes(filters)
    campaigns = _campaigns(filters)
    # Only votes of the scored protocols have ratings (voting refuses scores elsewhere). The
    # campaigns are named by id, so PostgreSQL reads their votes through the campaign index:
    # asked as a subquery it cannot tell how few they are, and reads every vote.
    scored = list(
        campaigns.exclude(protocol=Campaign.Protocol.PREFERENCE).values_list("pk", flat=True)
    )
    # -1 is no campaign's id: an empty IN list would make Django refuse to write the SQL.
    scored_votes = votes.filter(campaign_id__in=scored or [-1])
    return [
        _vote_table(votes, scored_votes, campaigns, in_snapshot=in_snapshot),
        _rating_table(MosRating.objects.filter(vote__in=scored_votes), campaigns),
        Table(
            "tracks",
            _values(_voted_tracks(votes), TRACK_PATHS),
            "track_id",
            _track_columns(in_snapshot=in_snapshot),
        ),
    ]


def _voted_tracks(votes: QuerySet[Vote]) -> QuerySet[Track]:
    """The clips of the pairs that hold at least one of the votes. Asked pair by pair (an
    index probe into the votes of each pair finds the first one), not by collecting the
    clips of every vote, which reads all the votes twice (0.4 s for a million)."""
    voted_pairs = Pair.objects.filter(Exists(votes.filter(pair_id=OuterRef("pk"))))
    return Track.objects.filter(
        Q(pk__in=voted_pairs.values("track_a_id")) | Q(pk__in=voted_pairs.values("track_b_id"))
    )


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
    votes: QuerySet[Vote],
    scored_votes: QuerySet[Vote],
    campaigns: QuerySet[Campaign],
    *,
    in_snapshot: bool,
) -> Table:
    columns = _vote_columns(in_snapshot=in_snapshot)
    pair_paths = {"pair_id": "id"} | {
        name: path.removeprefix("pair__") if path.startswith("pair__") else path
        for name, path in _subset(VOTE_PATHS, PAIR_FIELDS).items()
    }
    pairs = Pair.objects.filter(campaign__in=campaigns)
    dimensions = {
        "pair_id": _dimension(pairs, pair_paths, "pair_id", columns),
        "vote_id": _dimension(
            _with_scores(scored_votes), {"vote_id": "id"} | SCORE_PATHS, "vote_id", columns
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
