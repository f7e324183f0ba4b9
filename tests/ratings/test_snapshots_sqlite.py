"""Dataset snapshots on SQLite, the embedded default of platform/run.sh: the portable path of
ratings.snapshots writes the same files as the PostgreSQL one.

The suite's database is PostgreSQL, so the SQLite build runs end to end in subprocesses (migrate,
a few votes, export_dataset) against a database file in tmp_path; one more test runs the
portable path on the suite's PostgreSQL database and compares it with the COPY path there."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ratings.dataset import DataFilters
from ratings.models import Campaign, Vote
from ratings.pseudonyms import Pseudonyms
from ratings.snapshots import (
    portable,
    postgres_parquet,
    schema,
    snapshot_build,
    snapshot_create,
    writing,
)
from tests.factories import CampaignFactory, PairFactory, PromptFactory, RaterFactory, vote_on

ROOT = Path(__file__).resolve().parents[2]
ALL_FORMATS = ["jsonl", "csv", "parquet", "audiofolder"]

# Run inside `manage.py shell`: an A/B vote, a tie, a both-bad and two scored side-by-side
# votes, on a prompt whose text needs quoting in CSV and escaping in JSON. Prints the user ids.
SEED = """
import json
from ratings.models import Campaign, Vote
from tests.factories import CampaignFactory, PairFactory, PromptFactory, RaterFactory, vote_on
raters = [RaterFactory() for _ in range(3)]
ab = PairFactory(prompt=PromptFactory(text='calm "piano", with\\na new line, é'))
side = PairFactory(campaign=CampaignFactory(protocol=Campaign.Protocol.SIDE_BY_SIDE))
vote_on(ab, raters[0], Vote.Choice.A)
vote_on(ab, raters[1], Vote.Choice.TIE, left_is_a=False)
vote_on(ab, raters[2], Vote.Choice.BOTH_BAD)
vote_on(side, raters[0], scores=(4, 2))
vote_on(side, raters[1], scores=(3, 3), left_is_a=False)
print(json.dumps([r.user_id for r in raters]))
"""


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def sqlite_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A migrated SQLite database in a temporary DATA_DIR with the votes of SEED."""
    data = tmp_path_factory.mktemp("sqlite-data")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "DJANGO_", "SNAPSHOT_", "MEDIA_"))
    }
    env |= {
        "DATABASE_URL": f"sqlite:///{data / 'db.sqlite3'}", "SECRET_KEY": "sqlite-snapshot-test",
        "DATA_DIR": str(data), "DJANGO_SETTINGS_MODULE": "config.settings",
    }  # fmt: skip
    _manage(env, "migrate", "--noinput", "-v0")
    user_ids = json.loads(_manage(env, "shell", "-c", SEED).strip().splitlines()[-1])
    return {"env": env, "data": data, "user_ids": user_ids}


def _export(sqlite_env: dict[str, Any], out: Path, *extra: str) -> str:
    formats = [arg for fmt in ALL_FORMATS for arg in ("--format", fmt)]
    stdout = _manage(
        sqlite_env["env"], "export_dataset", *formats, "--out", str(out), "--no-progress", *extra
    )
    return re.search(r"sha256: ([0-9a-f]{64})", stdout).group(1)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _postgres_schema(name: str) -> pa.Schema:
    """The Arrow schema the PostgreSQL path writes for a table (it is the same in both)."""
    tables = {t.name: t for t in schema._tables(DataFilters(), in_snapshot=False)}
    return postgres_parquet._arrow_schema(tables[name])


@pytest.mark.django_db  # the PostgreSQL path's tables are defined from the campaigns it holds
def test_sqlite_export_writes_every_format(sqlite_env: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "export"
    _export(sqlite_env, out)

    for name in ("votes", "ratings", "tracks"):
        for fmt in ("jsonl", "csv", "parquet"):
            assert (out / f"{name}.{fmt}").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["row_counts"] == {"votes": 5, "ratings": 4, "tracks": 4}
    assert set(manifest["files"]) >= {"audiofolder/metadata.jsonl", "votes.parquet"}
    assert len(list((out / "audiofolder/audio").iterdir())) == 4

    for name, rows in manifest["row_counts"].items():
        table = pq.read_table(out / f"{name}.parquet")
        assert table.num_rows == rows
        assert table.schema.remove_metadata() == _postgres_schema(name)

    votes = _jsonl(out / "votes.jsonl")
    assert list(votes[0]) == manifest["columns"]["votes"]
    assert [(v["choice"], v["score_a"], v["score_b"]) for v in votes] == [
        ("a", None, None), ("tie", None, None), ("both_bad", None, None),
        (None, 4, 2), (None, 3, 3),
    ]  # fmt: skip
    assert votes[0]["prompt_text"] == 'calm "piano", with\na new line, é'
    assert [v["left_is_a"] for v in votes] == [True, False, True, True, False]
    timestamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?\+00:00"  # as PostgreSQL's JSON
    assert all(re.fullmatch(timestamp, v["created_at"]) for v in votes)
    parquet_votes = pq.read_table(out / "votes.parquet").to_pylist()
    assert [v["vote_id"] for v in parquet_votes] == [v["vote_id"] for v in votes]
    assert [v["rater"] for v in parquet_votes] == [v["rater"] for v in votes]

    with (out / "votes.csv").open(newline="") as file:
        csv_votes = list(csv.DictReader(file))
    assert list(csv_votes[0]) == manifest["columns"]["votes"]
    assert [(v["choice"], v["score_a"], v["score_b"]) for v in csv_votes] == [
        ("a", "", ""), ("tie", "", ""), ("both_bad", "", ""), ("", "4", "2"), ("", "3", "3"),
    ]  # fmt: skip
    assert csv_votes[0]["prompt_text"] == votes[0]["prompt_text"]
    assert csv_votes[1]["left_is_a"] == "false"
    assert [r["created_at"] for r in csv_votes] == [v["created_at"] for v in votes]
    with (out / "tracks.csv").open(newline="") as file:
        assert {r["duration_seconds"] for r in csv.DictReader(file)} == {"10"}  # as float8 out

    ratings = _jsonl(out / "ratings.jsonl")
    assert sorted(r["score"] for r in ratings) == [2, 3, 3, 4]
    metadata = _jsonl(out / "audiofolder/metadata.jsonl")
    assert [m["vote_id"] for m in metadata] == [v["vote_id"] for v in votes]
    assert metadata[0]["audio_a_file_name"] == f"audio/{votes[0]['track_a_id']}.ogg"

    raters = {v["rater"] for v in votes} | {r["rater"] for r in ratings}
    assert len(raters) == 3
    assert all(re.fullmatch(r"[0-9a-f]{16}", rater) for rater in raters)
    for path in ("votes.jsonl", "ratings.jsonl", "votes.csv", "audiofolder/metadata.jsonl"):
        text = (out / path).read_text()
        assert "rater_id" not in text and "user" not in text
    user_ids = {str(i) for i in sqlite_env["user_ids"]}
    assert not any(row["rater"] in user_ids for row in [*votes, *ratings, *metadata])


def test_sqlite_stable_ids_rebuild_identically(sqlite_env: dict[str, Any], tmp_path: Path) -> None:
    first = _export(sqlite_env, tmp_path / "first", "--stable-rater-ids")
    second = _export(sqlite_env, tmp_path / "second", "--stable-rater-ids")
    assert first == second
    for relative in ("votes.parquet", "votes.jsonl", "votes.csv", "audiofolder/metadata.jsonl"):
        assert (tmp_path / "first" / relative).read_bytes() == (
            tmp_path / "second" / relative
        ).read_bytes()
    # The stable salt comes from the SECRET_KEY: the pseudonyms are the HMAC PostgreSQL computes.
    salt = hmac.new(
        b"sqlite-snapshot-test", b"musicpref dataset snapshot rater ids", hashlib.sha256
    ).hexdigest()
    pseudonyms = Pseudonyms(salt)
    votes = _jsonl(tmp_path / "first" / "votes.jsonl")
    rater_ids = _manage(
        sqlite_env["env"], "shell", "-c",
        "from ratings.models import Vote; "
        "print(list(Vote.objects.order_by('id').values_list('rater_id', flat=True)))",
    )  # fmt: skip
    expected = [pseudonyms.of(i) for i in json.loads(rater_ids.strip().splitlines()[-1])]
    assert [v["rater"] for v in votes] == expected


@pytest.mark.django_db(transaction=True)  # a build's Parquet reader is a second connection
@pytest.mark.parametrize(
    ("chunk_rows", "group_rows", "audio"),
    [(None, None, False), (None, None, True), (2, 3, False), (4, 1, False)],
)
def test_portable_path_matches_postgres(
    settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chunk_rows: int | None,
    group_rows: int | None,
    audio: bool,
) -> None:
    """On the same PostgreSQL data with the same salt, the portable path writes the files the
    COPY path writes, byte for byte (also with Parquet row groups across fetched chunks)."""
    settings.SNAPSHOT_DIR = tmp_path / "snapshots"
    if chunk_rows:
        monkeypatch.setattr(portable, "CHUNK_ROWS", chunk_rows)
        for path in (portable, postgres_parquet):  # both paths cut the same row groups
            monkeypatch.setattr(path, "ROWS_PER_GROUP", group_rows)
    raters = [RaterFactory() for _ in range(3)]
    preference = PairFactory(prompt=PromptFactory(text='calm "piano", with\na new line, é'))
    side = PairFactory(campaign=CampaignFactory(protocol=Campaign.Protocol.SIDE_BY_SIDE))
    mos = PairFactory(campaign=CampaignFactory(protocol=Campaign.Protocol.MOS), track_b=None)
    vote_on(preference, raters[0], Vote.Choice.A)
    vote_on(preference, raters[1], Vote.Choice.TIE, left_is_a=False)
    vote_on(preference, raters[2], Vote.Choice.BOTH_BAD)
    vote_on(side, raters[0], scores=(4, 2))
    vote_on(mos, raters[2], scores=(5,))

    def build() -> dict[str, str]:
        snapshot = snapshot_create(
            filters=DataFilters(), formats=ALL_FORMATS, stable_rater_ids=True,
            include_audio=audio, queue=False,
        )  # fmt: skip
        built = snapshot_build(snapshot_id=snapshot.pk)
        assert built.status == built.Status.FINISHED, built.error
        return built.manifest["files"]

    copy_files = build()
    read = []
    python_rows = portable._python_rows
    monkeypatch.setattr(writing, "_backend", writing._portable_backend)
    monkeypatch.setattr(
        portable, "_python_rows", lambda *args: read.append(args[0].name) or python_rows(*args)
    )
    portable_files = build()
    # Every table in CSV, JSONL and Parquet, and the two passes of metadata.jsonl.
    assert sorted(read) == sorted(["votes", "ratings", "tracks"] * 3 + ["votes"] * 2)
    assert portable_files == copy_files
    if group_rows:
        votes = next(Path(settings.SNAPSHOT_DIR).glob("*/votes.parquet"))
        assert pq.ParquetFile(votes).metadata.num_row_groups == -(-5 // group_rows)
