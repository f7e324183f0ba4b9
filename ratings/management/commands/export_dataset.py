"""Build a dataset snapshot synchronously (no worker needed) and copy it to a folder.

    python manage.py export_dataset --format parquet,jsonl --format csv --out /tmp/export \\
        --campaign 3 --since 2026-01-01T00:00:00+00:00 --no-ties --min-rater-reliability 0.6
"""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ratings.dataset import DataFilters
from ratings.models import DatasetSnapshot, Vote
from ratings.snapshots import (
    FORMATS,
    SnapshotError,
    snapshot_build,
    snapshot_copy,
    snapshot_create,
)


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CommandError(f"not an ISO 8601 time: {text!r}") from exc
    # A time without a zone on the command line means UTC, the zone the rows are written in.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Export the votes, 1-5 ratings and tracks the filters select as a dataset snapshot "
        f"({', '.join(FORMATS)}) with a manifest, built in this process."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> ArgumentParser:
        # --version selects generator versions here, so it replaces Django's own --version.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--format", action="append", required=True, dest="formats",
            help=f"One of {', '.join(FORMATS)}; repeat it or give a comma-separated list.",
        )  # fmt: skip
        parser.add_argument("--out", type=Path, required=True, help="A new or empty folder.")
        parser.add_argument("--name", default="")
        parser.add_argument("--campaign", type=int, action="append", default=[])
        parser.add_argument("--protocol", action="append", default=[])
        parser.add_argument("--version", type=int, action="append", default=[],
                            help="Generator version id (either side).")  # fmt: skip
        parser.add_argument("--since", type=_moment, help="ISO 8601; UTC when no zone is given.")
        parser.add_argument("--until", type=_moment, help="ISO 8601, exclusive.")
        parser.add_argument("--min-rater-reliability", type=float)
        parser.add_argument("--min-gold-accuracy", type=float)
        parser.add_argument(
            "--vote-status", action="append", choices=list(Vote.Status.values),
            help="Repeatable; default counted only (flagged and rejected votes are kept aside).",
        )  # fmt: skip
        parser.add_argument("--no-ties", action="store_true")
        parser.add_argument("--no-both-bad", action="store_true")
        parser.add_argument("--audio", action="store_true", help="Copy the audio files in.")
        parser.add_argument("--stable-rater-ids", action="store_true",
                            help="Pseudonyms that stay the same across snapshots.")  # fmt: skip
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        out: Path = options["out"]
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise CommandError(f"{out} exists and is not an empty folder")
        formats = [f.strip() for value in options["formats"] for f in value.split(",") if f]
        try:
            snapshot = snapshot_create(
                filters=self._filters(options), formats=formats, name=options["name"],
                include_audio=options["audio"], stable_rater_ids=options["stable_rater_ids"],
                queue=False,
            )  # fmt: skip
        except SnapshotError as exc:
            raise CommandError(str(exc)) from exc
        snapshot = self._build(snapshot, progress=not options["no_progress"])
        if snapshot.status != DatasetSnapshot.Status.FINISHED:
            raise CommandError(f"snapshot {snapshot.pk} failed: {snapshot.error}")
        manifest = snapshot_copy(snapshot, out)
        self.stdout.write(f"snapshot {snapshot.pk}: {manifest}")
        for table, rows in snapshot.row_counts.items():
            self.stdout.write(f"  {table}: {rows}")
        self.stdout.write(f"  sha256: {snapshot.manifest['sha256']}")

    def _filters(self, options: dict[str, Any]) -> DataFilters:
        return DataFilters(
            campaign_ids=tuple(options["campaign"]), protocols=tuple(options["protocol"]),
            version_ids=tuple(options["version"]), since=options["since"],
            until=options["until"], min_rater_reliability=options["min_rater_reliability"],
            min_gold_accuracy=options["min_gold_accuracy"],
            vote_statuses=tuple(options["vote_status"] or (Vote.Status.COUNTED,)),
            include_ties=not options["no_ties"], include_both_bad=not options["no_both_bad"],
        )  # fmt: skip

    def _build(self, snapshot: DatasetSnapshot, *, progress: bool) -> DatasetSnapshot:
        disable = not progress or not sys.stderr.isatty()
        with tqdm(unit=" rows", unit_scale=True, disable=disable, file=sys.stderr) as bar:

            def advance(step: str, rows: int) -> None:
                bar.set_description(step, refresh=False)
                bar.update(rows)

            return snapshot_build(snapshot_id=snapshot.pk, progress=advance)
