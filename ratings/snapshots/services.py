"""Creating, building and reading snapshots: the entry points of the app."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage
from django.db import transaction
from django.utils import timezone

from generation.models import GeneratorVersion, Prompt
from ratings.dataset import DataFilters
from ratings.models import Campaign, DatasetSnapshot, Vote
from ratings.pseudonyms import stable_salt
from ratings.snapshots.manifest import _manifest
from ratings.snapshots.schema import FORMATS, MANIFEST_NAME, ProgressFn, SnapshotError
from ratings.snapshots.storage import (
    copy_out,
    local_root,
    open_stream,
    snapshot_storage,
    stored_files,
    stored_name,
)
from ratings.snapshots.writing import _consistent_write

logger = logging.getLogger(__name__)


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
    """Write the snapshot's files into a hidden local folder and publish them to the snapshots
    storage when complete (ratings.snapshots.storage), so a half-built snapshot is never
    visible; a failure leaves no files and records why."""
    DatasetSnapshot.objects.filter(pk=snapshot_id).update(
        status=DatasetSnapshot.Status.RUNNING, started_at=timezone.now(), error=""
    )
    snapshot = DatasetSnapshot.objects.get(pk=snapshot_id)
    storage = snapshot_storage()
    folder = local_root(storage)
    # A folder storage: build beside the final folder, so publishing is one rename on one file
    # system. An object store: build in this worker's SNAPSHOT_DIR (sized for snapshots, where
    # /tmp may be memory), upload, and remove the folder.
    scratch = folder if folder is not None else Path(settings.SNAPSHOT_DIR)
    scratch.mkdir(parents=True, exist_ok=True)
    partial = scratch / f".{snapshot.storage_prefix}.partial-{secrets.token_hex(4)}"
    try:
        partial.mkdir()
        counts, agreement = _consistent_write(
            snapshot, partial, progress or (lambda step, rows: None)
        )
        manifest = _manifest(snapshot, partial, counts, agreement)
        (partial / MANIFEST_NAME).write_text(_json_text(manifest))
        if folder is not None:
            _replace_directory(partial, folder / snapshot.storage_prefix)
        else:
            _upload(storage, partial, snapshot.storage_prefix, manifest)
    except Exception as exc:
        logger.exception("dataset snapshot %s failed", snapshot_id)
        if folder is None:
            _delete_stored(storage, snapshot.storage_prefix)
        DatasetSnapshot.objects.filter(pk=snapshot_id).update(
            status=DatasetSnapshot.Status.FAILED, error=repr(exc), finished_at=timezone.now()
        )
        snapshot.refresh_from_db()
        return snapshot
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # already moved away on a folder storage
    DatasetSnapshot.objects.filter(pk=snapshot_id).update(
        status=DatasetSnapshot.Status.FINISHED, row_counts=counts, manifest=manifest,
        finished_at=timezone.now(),
    )  # fmt: skip
    snapshot.refresh_from_db()
    return snapshot


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


def _upload(storage: Storage, folder: Path, prefix: str, manifest: dict) -> None:
    """Every file, the manifest last (whoever finds the manifest finds every file it lists),
    then away with whatever an earlier build left that this one does not have. The snapshot
    is marked finished only after this returns."""
    names = [stored_name(prefix, relative) for relative in [*manifest["files"], MANIFEST_NAME]]
    for name in names:
        with (folder / PurePosixPath(name).relative_to(prefix)).open("rb") as content:
            saved = storage.save(name, File(content))
        if saved != name:  # a storage that keeps old files renames new ones: nobody finds them
            raise SnapshotError(f"the snapshots storage saved {name} as {saved}; it must overwrite")
    for name in set(stored_files(storage, prefix)) - set(names):
        storage.delete(name)


def _delete_stored(storage: Storage, prefix: str) -> None:
    """A failed build's objects (and a failed rebuild's old ones, no longer a whole
    snapshot), so none is left behind; if the store is down too, the error is logged."""
    try:
        for name in list(stored_files(storage, prefix)):
            storage.delete(name)
    except Exception:
        logger.exception("could not delete the objects under %s", prefix)


def snapshot_file(snapshot: DatasetSnapshot, relative_path: str) -> IO[bytes]:
    """The file of a finished snapshot at `relative_path`, opened for reading from the snapshots
    storage (the caller closes it); anything its manifest does not list (other files, `..`,
    absolute paths) is refused."""
    if snapshot.status != DatasetSnapshot.Status.FINISHED:
        raise SnapshotError("the snapshot is not finished")
    path = PurePosixPath(relative_path)
    if relative_path not in snapshot.files() or path.is_absolute() or ".." in path.parts:
        raise SnapshotError(f"{relative_path!r} is not a file of this snapshot")
    try:
        return open_stream(snapshot_storage(), stored_name(snapshot.storage_prefix, relative_path))
    except FileNotFoundError as error:
        raise SnapshotError(f"{relative_path!r} is missing from the snapshots storage") from error


def snapshot_copy(snapshot: DatasetSnapshot, destination: Path) -> Path:
    """Copy a finished snapshot's files to `destination` (hard links where the snapshots
    storage is a local folder, else downloads) and return the copied manifest's path."""
    if snapshot.status != DatasetSnapshot.Status.FINISHED:
        raise SnapshotError("the snapshot is not finished")
    storage = snapshot_storage()
    if local_root(storage) is not None:
        shutil.copytree(
            snapshot.directory, destination, copy_function=_link_or_copy, dirs_exist_ok=True
        )
    else:
        destination.mkdir(parents=True, exist_ok=True)
        for relative in snapshot.files():
            copy_out(
                storage, stored_name(snapshot.storage_prefix, relative), destination / relative
            )
    return destination / MANIFEST_NAME


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
