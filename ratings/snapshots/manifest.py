"""The manifest: what the files hold, their hashes, and the raters' agreement."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

from django.conf import settings
from django.db.models import Exists, OuterRef

from ratings.dataset import DataFilters, filtered_votes
from ratings.models import Campaign, DatasetSnapshot
from ratings.pseudonyms import PSEUDONYM_HEX
from ratings.snapshots.schema import SCHEMA_VERSION, _rating_columns, _track_columns, _vote_columns


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


def _manifest(
    snapshot: DatasetSnapshot,
    directory: Path,
    counts: dict[str, int],
    agreement: dict[str, float | None],
) -> dict:
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
        "agreement": agreement,
        "columns": columns,
        "files": files,
        "sha256": combined_sha256(files),
    }


def _agreement(filters: DataFilters) -> dict[str, float | None]:
    """Krippendorff's alpha of each campaign in the snapshot over its counted votes (the
    campaign's own agreement, whatever the snapshot's other filters)."""
    from ratings.selectors import campaign_agreement

    # Campaign by campaign, an index probe for one of its votes: far cheaper than collecting
    # the distinct campaigns of all the votes (0.3 s for a million).
    votes = filtered_votes(filters).filter(campaign_id=OuterRef("pk"))
    campaign_ids = sorted(Campaign.objects.filter(Exists(votes)).values_list("pk", flat=True))
    alphas = campaign_agreement(campaign_ids)
    return {str(pk): alphas.get(pk) for pk in campaign_ids}
