"""Dataset snapshots: every format reads back to the stored votes, rebuilds are byte-identical,
rater ids stay pseudonymous, and bad input stores nothing."""

from __future__ import annotations

import csv
import json
import sys
import threading
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from ratings import snapshots, tasks
from ratings.dataset import DataFilters, vote_rows
from ratings.models import Campaign, DatasetSnapshot, MosRating, Vote
from ratings.pseudonyms import PSEUDONYM_HEX, Pseudonyms, stable_salt
from ratings.snapshots import (
    SnapshotError,
    postgres_parquet,
    snapshot_build,
    snapshot_create,
    writing,
)
from ratings.snapshots.schema import Table
from tests.factories import CampaignFactory, PairFactory, PromptFactory, RaterFactory, vote_on

# Transactional: a build reads through a second connection (the Parquet writer's ADBC
# reader), which cannot see what an open test transaction wrote.
pytestmark = pytest.mark.django_db(transaction=True)
ALL_FORMATS = ["jsonl", "csv", "parquet", "audiofolder"]
INTS = {"vote_id", "pair_id", "campaign_id", "prompt_id", "track_a_id", "track_b_id", "score_a",
        "score_b", "listen_ms_a", "listen_ms_b", "elapsed_ms", "rating_id", "track_id", "score",
        "listen_ms", "seed", "sample_rate"}  # fmt: skip


@pytest.fixture(autouse=True)
def _snapshots_in_tmp(settings, tmp_path: Path) -> None:
    settings.SNAPSHOT_DIR = tmp_path / "snapshots"


@pytest.fixture
def votes() -> list[Vote]:
    """A/B votes (one a tie, one both-bad), side-by-side votes with scores, and a MOS vote, on
    prompts whose text needs quoting in CSV and escaping in JSON."""
    raters = [RaterFactory() for _ in range(3)]
    preference = PairFactory(prompt=PromptFactory(text='calm "piano", with\na new line, é'))
    side = PairFactory(campaign=CampaignFactory(protocol=Campaign.Protocol.SIDE_BY_SIDE))
    mos = PairFactory(campaign=CampaignFactory(protocol=Campaign.Protocol.MOS), track_b=None)
    return [
        vote_on(preference, raters[0], Vote.Choice.A),
        vote_on(preference, raters[1], Vote.Choice.TIE, left_is_a=False),
        vote_on(preference, raters[2], Vote.Choice.BOTH_BAD),
        vote_on(side, raters[0], scores=(4, 2)),
        vote_on(side, raters[1], scores=(3, 3), left_is_a=False),
        vote_on(mos, raters[2], scores=(5,)),
    ]


def build(**kwargs: Any) -> DatasetSnapshot:
    kwargs.setdefault("filters", DataFilters())
    kwargs.setdefault("formats", ALL_FORMATS)
    snapshot = snapshot_create(queue=False, **kwargs)
    return snapshot_build(snapshot_id=snapshot.pk)


def expected_votes(snapshot: DatasetSnapshot) -> list[dict[str, Any]]:
    """The vote rows as the ORM sees them, written out independently of the export's SQL."""
    pseudonyms = Pseudonyms(snapshot.pseudonym_salt)
    rows = []
    for vote in Vote.objects.order_by("id").select_related("pair__track_a", "pair__track_b"):
        pair = vote.pair
        scores = dict(vote.ratings.values_list("track_id", "score"))
        tracks = (pair.track_a, pair.track_b)
        audio = [
            None if t is None else
            f"audio/{t.pk}.ogg" if snapshot.include_audio else t.audio.name
            for t in tracks
        ]  # fmt: skip
        rows.append({
            "vote_id": vote.pk, "pair_id": pair.pk, "campaign_id": vote.campaign_id,
            "campaign_name": vote.campaign.name, "protocol": vote.campaign.protocol,
            "prompt_id": pair.prompt_id, "prompt_text": pair.prompt.text,
            "track_a_id": pair.track_a_id, "track_b_id": pair.track_b_id,
            "audio_a": audio[0], "audio_b": audio[1],
            "version_a": pair.track_a.generator_version.name,
            "version_b": pair.track_b.generator_version.name if pair.track_b else None,
            "left_is_a": vote.left_is_a, "choice": vote.choice,
            "score_a": scores.get(pair.track_a_id), "score_b": scores.get(pair.track_b_id),
            "listen_ms_a": vote.listen_ms_a, "listen_ms_b": vote.listen_ms_b,
            "elapsed_ms": vote.elapsed_ms, "status": vote.status,
            "rater": pseudonyms.of(vote.rater_id), "created_at": vote.created_at.astimezone(UTC),
        })  # fmt: skip
    return rows


def from_text(row: dict[str, Any], *, csv_cells: bool) -> dict[str, Any]:
    """A JSONL or CSV row with its values turned back into Python types."""
    row = dict(row)
    for key, value in row.items():
        if csv_cells and value == "":
            row[key] = None
        elif csv_cells and key in INTS:
            row[key] = int(value)
        elif csv_cells and key == "left_is_a":
            assert value in ("true", "false")
            row[key] = value == "true"
        elif csv_cells and key == "duration_seconds":
            row[key] = float(value)
    row["created_at"] = datetime.fromisoformat(row["created_at"])
    return row


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [from_text(json.loads(line), csv_cells=False) for line in path.read_text().splitlines()]


def read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as file:
        return [from_text(row, csv_cells=True) for row in csv.DictReader(file)]


def test_every_format_reads_back_to_the_stored_votes(votes: list[Vote]) -> None:
    snapshot = build(include_audio=True)

    assert snapshot.status == DatasetSnapshot.Status.FINISHED, snapshot.error
    expected = expected_votes(snapshot)
    directory = snapshot.directory
    assert pq.read_table(directory / "votes.parquet").to_pylist() == expected
    assert read_jsonl(directory / "votes.jsonl") == expected
    assert read_csv(directory / "votes.csv") == expected
    assert snapshot.row_counts == {"votes": 6, "ratings": 5, "tracks": 5}


def test_the_rows_are_the_ones_the_dataset_module_defines(votes: list[Vote]) -> None:
    snapshot = build(formats=["parquet"])

    exported = pq.read_table(snapshot.directory / "votes.parquet").to_pylist()
    for row, reference in zip(exported, vote_rows(DataFilters()), strict=True):
        shared = set(row) & set(reference) - {"created_at"}
        assert {key: row[key] for key in shared} == {key: reference[key] for key in shared}
        assert row["created_at"] == datetime.fromisoformat(reference["created_at"])


def test_ratings_and_tracks_tables_match_in_every_format(votes: list[Vote]) -> None:
    unvoted = PairFactory()  # its clips are in no vote, so in no table
    snapshot = build(formats=["jsonl", "csv", "parquet"])

    directory = snapshot.directory
    pseudonyms = Pseudonyms(snapshot.pseudonym_salt)
    ratings = [
        {
            "rating_id": r.pk, "vote_id": r.vote_id, "campaign_id": r.campaign_id,
            "protocol": r.campaign.protocol, "track_id": r.track_id,
            "prompt_id": r.track.prompt_id, "prompt_text": r.track.prompt.text,
            "version": r.track.generator_version.name, "score": r.score,
            "listen_ms": r.listen_ms, "rater": pseudonyms.of(r.rater_id),
            "created_at": r.created_at.astimezone(UTC),
        }
        for r in MosRating.objects.order_by("id")
    ]  # fmt: skip
    assert pq.read_table(directory / "ratings.parquet").to_pylist() == ratings
    assert read_jsonl(directory / "ratings.jsonl") == ratings
    assert read_csv(directory / "ratings.csv") == ratings
    tracks = pq.read_table(directory / "tracks.parquet").to_pylist()
    voted = {v.pair.track_a_id for v in votes} | {v.pair.track_b_id for v in votes} - {None}
    assert [t["track_id"] for t in tracks] == sorted(voted)
    assert not {unvoted.track_a_id, unvoted.track_b_id} & voted
    assert read_jsonl(directory / "tracks.jsonl") == tracks
    # A CSV cell cannot tell an empty caption from a missing one (PostgreSQL quotes the empty
    # string, the csv module drops the quotes).
    assert read_csv(directory / "tracks.csv") == [t | {"caption": None} for t in tracks]
    pair = votes[0].pair
    assert tracks[[t["track_id"] for t in tracks].index(pair.track_a_id)] == {
        "track_id": pair.track_a_id, "prompt_id": pair.prompt_id, "prompt_text": pair.prompt.text,
        "version": pair.track_a.generator_version.name, "seed": pair.track_a.seed,
        "duration_seconds": 10.0, "sample_rate": 48000, "mime_type": "audio/ogg",
        "audio": pair.track_a.audio.name, "caption": "",
        "created_at": pair.track_a.created_at.astimezone(UTC),
    }  # fmt: skip


def test_parquet_columns_have_explicit_types(votes: list[Vote]) -> None:
    snapshot = build(formats=["parquet"])

    schema = pq.read_schema(snapshot.directory / "votes.parquet")
    assert str(schema.field("vote_id").type) == "int64"
    assert str(schema.field("score_a").type) == "int16"
    assert str(schema.field("left_is_a").type) == "bool"
    assert str(schema.field("created_at").type) == "timestamp[us, tz=UTC]"


def test_the_audiofolder_loads_with_hugging_face_datasets(
    votes: list[Vote], tmp_path, monkeypatch
) -> None:
    import datasets

    # datasets imports torchcodec's encoder even to store a file path; decoding is the
    # researcher's business (the placeholder clips here are not audio), so a stub stands in.
    encoders = types.ModuleType("torchcodec.encoders")
    encoders.AudioEncoder = object
    monkeypatch.setitem(sys.modules, "torchcodec", types.ModuleType("torchcodec"))
    monkeypatch.setitem(sys.modules, "torchcodec.encoders", encoders)

    snapshot = build(formats=["audiofolder"])

    folder = snapshot.directory / "audiofolder"
    loaded = datasets.load_dataset(
        "audiofolder", data_dir=str(folder), cache_dir=str(tmp_path / "hf"), split="train"
    )
    loaded = loaded.cast_column("audio_a", datasets.Audio(decode=False))
    loaded = loaded.cast_column("audio_b", datasets.Audio(decode=False))
    expected = expected_votes(snapshot)
    assert len(loaded) == len(expected)
    for row, vote in zip(loaded, expected, strict=True):
        assert row["vote_id"] == vote["vote_id"] and row["rater"] == vote["rater"]
        assert row["choice"] == vote["choice"] and row["score_a"] == vote["score_a"]
        assert Path(row["audio_a"]["path"]).read_bytes() == b"OggS placeholder"
        assert (row["audio_b"] is None) == (vote["track_b_id"] is None)
    assert snapshot.row_counts["votes"] == len(expected)


def test_the_audiofolder_lists_two_clip_votes_first() -> None:
    # datasets types a column from the first rows: nulls first would hide audio_b.
    mos = PairFactory(campaign=CampaignFactory(protocol=Campaign.Protocol.MOS), track_b=None)
    first = vote_on(mos, RaterFactory(), scores=(3,))
    second = vote_on(PairFactory(), RaterFactory(), Vote.Choice.A)

    snapshot = build(formats=["audiofolder"])

    lines = (snapshot.directory / "audiofolder/metadata.jsonl").read_text().splitlines()
    assert [json.loads(line)["vote_id"] for line in lines] == [second.pk, first.pk]


def test_included_audio_is_the_stored_audio(votes: list[Vote]) -> None:
    snapshot = build(formats=["jsonl"], include_audio=True)

    for row in read_jsonl(snapshot.directory / "votes.jsonl"):
        assert (snapshot.directory / row["audio_a"]).read_bytes() == b"OggS placeholder"
    assert "audio/" + f"{votes[0].pair.track_a_id}.ogg" in snapshot.files()


def test_the_manifest_hashes_every_file(votes: list[Vote]) -> None:
    snapshot = build(include_audio=True)

    manifest = json.loads((snapshot.directory / "manifest.json").read_text())
    assert manifest == snapshot.manifest
    on_disk = {
        path.relative_to(snapshot.directory).as_posix()
        for path in snapshot.directory.rglob("*")
        if path.is_file()
    }
    assert on_disk == set(snapshot.files())
    for relative, sha in manifest["files"].items():
        assert snapshots.file_sha256(snapshot.directory / relative) == sha
    assert manifest["sha256"] == snapshots.combined_sha256(manifest["files"])
    assert manifest["row_counts"] == snapshot.row_counts
    assert manifest["filters"] == DataFilters().to_json()
    assert manifest["schema_version"] == snapshots.SCHEMA_VERSION
    assert manifest["code_version"].startswith("0.1.0+")
    assert snapshot.pseudonym_salt not in json.dumps(manifest)


def test_rebuilding_gives_byte_identical_files(votes: list[Vote]) -> None:
    snapshot = build(include_audio=True)
    first = (snapshot.directory / "manifest.json").read_bytes()

    rebuilt = snapshot_build(snapshot_id=snapshot.pk)

    assert (rebuilt.directory / "manifest.json").read_bytes() == first
    assert rebuilt.manifest["sha256"] == snapshot.manifest["sha256"]


def test_stable_rater_ids_give_identical_snapshots_of_the_same_data(votes: list[Vote]) -> None:
    first = build(stable_rater_ids=True)
    second = build(stable_rater_ids=True)

    assert first.manifest["files"] == second.manifest["files"]
    assert first.manifest["sha256"] == second.manifest["sha256"]
    # The API's pseudonyms use the same key, so its rows join to these snapshots.
    assert first.pseudonym_salt == stable_salt()


def test_default_pseudonyms_differ_between_snapshots(votes: list[Vote]) -> None:
    first, second = build(formats=["parquet"]), build(formats=["parquet"])

    raters = [
        pq.read_table(s.directory / "votes.parquet").column("rater").to_pylist()
        for s in (first, second)
    ]
    assert not set(raters[0]) & set(raters[1])
    assert first.manifest["sha256"] != second.manifest["sha256"]


def test_no_rater_id_appears_in_any_file(votes: list[Vote]) -> None:
    snapshot = build(formats=["parquet"])

    raters = pq.read_table(snapshot.directory / "votes.parquet").column("rater").to_pylist()
    assert all(len(r) == PSEUDONYM_HEX for r in raters)
    assert raters == [Pseudonyms(snapshot.pseudonym_salt).of(v.rater_id) for v in votes]
    assert not {str(v.rater_id) for v in votes} & set(raters)


def test_a_new_vote_changes_the_hash(votes: list[Vote]) -> None:
    before = build(stable_rater_ids=True, formats=["parquet"])
    vote_on(PairFactory(), RaterFactory(), Vote.Choice.B)

    after = build(stable_rater_ids=True, formats=["parquet"])

    assert after.row_counts["votes"] == before.row_counts["votes"] + 1
    assert after.manifest["sha256"] != before.manifest["sha256"]


def test_filters_select_the_same_votes_as_the_dataset_module(votes: list[Vote]) -> None:
    campaign = votes[0].campaign
    filters = DataFilters(campaign_ids=(campaign.pk,), include_ties=False, include_both_bad=False)

    snapshot = build(filters=filters, formats=["jsonl"])

    exported = [row["vote_id"] for row in read_jsonl(snapshot.directory / "votes.jsonl")]
    assert exported == [votes[0].pk] == [row["vote_id"] for row in vote_rows(filters)]
    assert snapshot.row_counts == {"votes": 1, "ratings": 0, "tracks": 2}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"formats": []},
        {"formats": ["xlsx"]},
        {"formats": "parquet"},
        {"filters": DataFilters(campaign_ids=(999_999,))},
        {"filters": DataFilters(version_ids=(999_999,))},
        {"filters": DataFilters(protocols=("karaoke",))},
        {
            "filters": DataFilters(
                since=datetime(2026, 2, 1, tzinfo=UTC), until=datetime(2026, 1, 1, tzinfo=UTC)
            )
        },
        {"filters": DataFilters(min_rater_reliability=1.5)},
        {"name": "x" * 201},
    ],
)
def test_bad_input_is_refused_and_stores_nothing(kwargs: dict[str, Any]) -> None:
    kwargs = {"filters": DataFilters(), "formats": ["parquet"]} | kwargs

    with pytest.raises(SnapshotError):
        snapshot_create(**kwargs)

    assert not DatasetSnapshot.objects.exists()


def test_a_failed_build_is_marked_and_leaves_no_files(votes: list[Vote], monkeypatch) -> None:
    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(writing, "_write_parquet", explode)

    snapshot = build(formats=["jsonl", "parquet"])

    assert snapshot.status == DatasetSnapshot.Status.FAILED
    assert "disk full" in snapshot.error
    assert not any(Path(snapshot.directory.parent).iterdir())


def test_a_build_failing_mid_stream_cancels_the_copy_and_can_be_retried(
    votes: list[Vote], monkeypatch
) -> None:
    monkeypatch.setattr(postgres_parquet, "ROWS_PER_GROUP", 2)  # so the COPY is still open
    assemble = postgres_parquet._assemble

    def fail_on_votes(table: Table, *args: Any) -> Any:
        if table.name == "votes":
            raise RuntimeError("worker lost")
        return assemble(table, *args)

    monkeypatch.setattr(postgres_parquet, "_assemble", fail_on_votes)
    snapshot = build(formats=["parquet"])
    assert snapshot.status == DatasetSnapshot.Status.FAILED
    assert "worker lost" in snapshot.error
    monkeypatch.setattr(postgres_parquet, "_assemble", assemble)

    retried = snapshot_build(snapshot_id=snapshot.pk)

    assert retried.status == DatasetSnapshot.Status.FINISHED, retried.error
    assert retried.error == ""
    assert pq.read_table(retried.directory / "votes.parquet").num_rows == len(votes)


def test_a_vote_cast_during_the_build_is_in_no_file_and_not_in_the_agreement(
    votes: list[Vote], monkeypatch
) -> None:
    """The Parquet files and the agreement are written by threads with connections of their
    own, beside the text files on the build's connection: all of them read the build's
    snapshot, so a campaign voted on once the build has started is in none of them."""
    tables = writing._tables
    late: list[Vote] = []

    def vote_in_a_new_campaign() -> None:
        pair = PairFactory(campaign=CampaignFactory(protocol=Campaign.Protocol.SIDE_BY_SIDE))
        late.append(vote_on(pair, RaterFactory(), scores=(1, 5)))
        connections.close_all()

    def tables_after_a_late_vote(*args: Any, **kwargs: Any) -> Any:
        # Committed by another connection after the build took its snapshot.
        voter = threading.Thread(target=vote_in_a_new_campaign)
        voter.start()
        voter.join()
        return tables(*args, **kwargs)

    monkeypatch.setattr(writing, "_tables", tables_after_a_late_vote)
    snapshot = build(formats=["jsonl", "csv", "parquet"])

    assert snapshot.status == DatasetSnapshot.Status.FINISHED, snapshot.error
    assert late and Vote.objects.filter(pk=late[0].pk).exists()  # the vote was stored
    stored_before = {v.pk for v in votes}
    assert {r["vote_id"] for r in read_jsonl(snapshot.directory / "votes.jsonl")} == stored_before
    assert {r["vote_id"] for r in read_csv(snapshot.directory / "votes.csv")} == stored_before
    parquet_ids = pq.read_table(snapshot.directory / "votes.parquet").column("vote_id")
    assert set(parquet_ids.to_pylist()) == stored_before
    ratings = pq.read_table(snapshot.directory / "ratings.parquet").column("vote_id").to_pylist()
    assert late[0].pk not in ratings
    assert set(snapshot.manifest["agreement"]) == {str(v.campaign_id) for v in votes}
    assert snapshot.row_counts["votes"] == len(votes)


def test_files_outside_the_manifest_are_refused(votes: list[Vote]) -> None:
    snapshot = build(formats=["jsonl"])
    (snapshot.directory.parent / "secret.txt").write_text("no")

    with snapshots.snapshot_file(snapshot, "votes.jsonl") as opened:
        assert opened.read() == (snapshot.directory / "votes.jsonl").read_bytes()
    for bad in ("../secret.txt", "/etc/passwd", "votes.csv", "audio", ""):
        with pytest.raises(SnapshotError):
            snapshots.snapshot_file(snapshot, bad)


def test_an_unfinished_snapshot_has_no_files(votes: list[Vote]) -> None:
    snapshot = snapshot_create(filters=DataFilters(), formats=["jsonl"], queue=False)

    with pytest.raises(SnapshotError):
        snapshots.snapshot_file(snapshot, "votes.jsonl")


def test_creating_queues_the_build_after_commit(
    votes: list[Vote], django_capture_on_commit_callbacks, monkeypatch
) -> None:
    queued: list[int] = []
    monkeypatch.setattr(tasks.build_snapshot, "delay", lambda pk: queued.append(pk))

    with django_capture_on_commit_callbacks(execute=True):
        snapshot = snapshot_create(filters=DataFilters(), formats=["csv"])

    assert queued == [snapshot.pk]
    assert snapshot.status == DatasetSnapshot.Status.QUEUED


def test_the_task_builds_the_snapshot(votes: list[Vote]) -> None:
    snapshot = snapshot_create(filters=DataFilters(), formats=["csv"], queue=False)

    tasks.build_snapshot.apply(args=[snapshot.pk])

    snapshot.refresh_from_db()
    assert snapshot.status == DatasetSnapshot.Status.FINISHED
    assert snapshot.started_at <= snapshot.finished_at
    assert (snapshot.directory / "votes.csv").exists()


def test_the_command_exports_synchronously(votes: list[Vote], tmp_path, capsys) -> None:
    out = tmp_path / "export"
    since = (timezone.now() - timedelta(days=1)).isoformat()

    call_command(
        "export_dataset", "--format", "parquet,jsonl", "--format", "csv", "--out", str(out),
        "--since", since, "--no-ties", "--stable-rater-ids", "--no-progress",
    )  # fmt: skip

    printed = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert str(out / "manifest.json") in printed and "votes: 5" in printed
    assert manifest["formats"] == ["jsonl", "csv", "parquet"]
    assert manifest["filters"]["include_ties"] is False
    assert len(pq.read_table(out / "votes.parquet")) == 5


def test_the_command_refuses_bad_input(tmp_path) -> None:
    from django.core.management import CommandError

    with pytest.raises(CommandError):
        call_command("export_dataset", "--format", "xlsx", "--out", str(tmp_path / "x"))
    assert not DatasetSnapshot.objects.exists()
