"""The rows a dataset holds: one per vote and one per 1-5 rating, with the filters a researcher
chooses. Reward-model training reads exactly these rows (and records their hash), and dataset
snapshots write them to files, so a model can always be traced to the data it saw.

Rows are plain dicts of JSON-friendly values, streamed in id order with `.iterator()`; the
generator versions of both sides are in them, so nothing here may ever reach a rater.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, F, Q, QuerySet

from ratings.models import MosRating, Pair, Vote
from ratings.vote_fields import VOTE_FIELDS_BY_NAME, vote_field_names

ROW_BATCH = 2_000
# Reliability is unknown for raters with fewer comparable votes than this: they are kept.
RELIABILITY_MIN_VOTES = 3


@dataclass(frozen=True)
class DataFilters:
    """Which votes and ratings a dataset holds. Empty tuples mean "all"."""

    campaign_ids: tuple[int, ...] = ()
    protocols: tuple[str, ...] = ()
    version_ids: tuple[int, ...] = ()
    # Prompt sources (curated, user, playground); the playground's typed prompts can be
    # included or left out.
    prompt_sources: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    # Raters whose agreement with the other raters (see rater_reliability) is below this are
    # left out; None keeps everyone.
    min_rater_reliability: float | None = None
    # Raters whose share of right answers on gold and trap checks is below this are left out.
    min_gold_accuracy: float | None = None
    include_ties: bool = True
    include_both_bad: bool = True
    # Flagged and rejected votes are kept but left out unless asked for; check items (gold,
    # trap, qualification) are never rows of a dataset.
    vote_statuses: tuple[str, ...] = (Vote.Status.COUNTED,)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("since", "until"):
            data[key] = data[key].isoformat() if data[key] else None
        for key in ("campaign_ids", "protocols", "version_ids", "prompt_sources"):
            data[key] = list(data[key])
        data["vote_statuses"] = [str(status) for status in data["vote_statuses"]]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataFilters:
        data = dict(data)
        for key in ("since", "until"):
            data[key] = datetime.fromisoformat(data[key]) if data.get(key) else None
        for key in ("campaign_ids", "protocols", "version_ids", "prompt_sources"):
            data[key] = tuple(data.get(key) or ())
        # Filters saved before votes had a status selected every vote, all of them counted.
        data["vote_statuses"] = tuple(data.get("vote_statuses") or (Vote.Status.COUNTED,))
        return cls(**data)


def filtered_votes(filters: DataFilters) -> QuerySet[Vote]:
    """The votes a dataset with these filters holds (reward training and snapshots alike)."""
    votes = Vote.objects.filter(pair__kind=Pair.Kind.REGULAR, status__in=filters.vote_statuses)
    if filters.campaign_ids:
        votes = votes.filter(campaign_id__in=filters.campaign_ids)
    if filters.protocols:
        votes = votes.filter(campaign__protocol__in=filters.protocols)
    if filters.prompt_sources:
        votes = votes.filter(pair__prompt__source__in=filters.prompt_sources)
    if filters.version_ids:
        votes = votes.filter(
            Q(pair__track_a__generator_version_id__in=filters.version_ids)
            | Q(pair__track_b__generator_version_id__in=filters.version_ids)
        )
    if filters.since:
        votes = votes.filter(created_at__gte=filters.since)
    if filters.until:
        votes = votes.filter(created_at__lt=filters.until)
    if not filters.include_ties:
        votes = votes.exclude(choice=Vote.Choice.TIE)
    if not filters.include_both_bad:
        votes = votes.exclude(choice=Vote.Choice.BOTH_BAD)
    if filters.min_rater_reliability is not None:
        unreliable = [
            rater_id
            for rater_id, score in rater_reliability(votes).items()
            if score.reliability is not None and score.reliability < filters.min_rater_reliability
        ]
        votes = votes.exclude(rater_id__in=unreliable)
    if filters.min_gold_accuracy is not None:
        checks = Vote.objects.all()
        if filters.campaign_ids:
            checks = checks.filter(campaign_id__in=filters.campaign_ids)
        failing = [
            rater_id
            for rater_id, accuracy in gold_accuracy(checks).items()
            if accuracy is not None and accuracy < filters.min_gold_accuracy
        ]
        votes = votes.exclude(rater_id__in=failing)
    return votes


# The dataset's own vote columns: the prompt's source (training may leave playground prompts
# out) and the rater's id (agreement is measured per rater; these rows never leave the
# platform). name -> ORM path of every column the query reads; vote_rows adds the scores.
_DATASET_PATHS = {"prompt_source": "pair__prompt__source", "rater_id": "rater_id"}
VOTE_COLUMNS = {
    name: path
    for name in vote_field_names(after={"prompt_text": ["prompt_source"], "score_b": ["rater_id"]})
    if (path := _DATASET_PATHS.get(name) or VOTE_FIELDS_BY_NAME[name].path)
}


def vote_rows(filters: DataFilters) -> Iterator[dict[str, Any]]:
    """One row per vote, in id order: the shared vote fields (`ratings.vote_fields`) and the
    dataset's own, with both clips' 1-5 scores where the protocol asks for them (score_a /
    score_b in the pair's own track order; None otherwise)."""
    votes = (
        filtered_votes(filters)
        .order_by("id")
        .values(
            *[name for name, path in VOTE_COLUMNS.items() if name == path],
            **{name: F(path) for name, path in VOTE_COLUMNS.items() if name != path},
        )
    )
    for batch in _batched(votes.iterator(chunk_size=ROW_BATCH), ROW_BATCH):
        scores = _scores_by_vote([row["vote_id"] for row in batch])
        for row in batch:
            track_scores = scores.get(row["vote_id"], {})
            row["score_a"] = track_scores.get(row["track_a_id"])
            row["score_b"] = track_scores.get(row["track_b_id"])
            row["created_at"] = row["created_at"].isoformat()
            yield row


def _scores_by_vote(vote_ids: list[int]) -> dict[int, dict[int, int]]:
    scores: dict[int, dict[int, int]] = defaultdict(dict)
    for vote_id, track_id, score in MosRating.objects.filter(vote_id__in=vote_ids).values_list(
        "vote_id", "track_id", "score"
    ):
        scores[vote_id][track_id] = score
    return scores


def rating_rows(filters: DataFilters) -> Iterator[dict[str, Any]]:
    """One row per 1-5 rating of one clip (side-by-side and MOS protocols)."""
    ratings = (
        MosRating.objects.filter(vote__in=filtered_votes(filters))
        .order_by("id")
        .values(
            "vote_id",
            "campaign_id",
            "track_id",
            "rater_id",
            "score",
            "listen_ms",
            "created_at",
            rating_id=F("id"),
            protocol=F("campaign__protocol"),
            prompt_id=F("track__prompt_id"),
            prompt_text=F("track__prompt__text"),
            version=F("track__generator_version__name"),
        )
    )
    for row in ratings.iterator(chunk_size=ROW_BATCH):
        row["created_at"] = row["created_at"].isoformat()
        yield row


def _batched(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def rows_sha256(rows: Iterable[dict[str, Any]]) -> str:
    """A hash of rows as canonical JSON lines: equal data gives an equal hash."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


# --- what a vote says about its pair ---------------------------------------------------------


def preference_target(row: dict[str, Any]) -> float | None:
    """P(track a preferred) a vote row states: 1, 0, or 0.5 for a tie; None when the row says
    nothing about which clip is better (both bad, or a single-clip MOS item). Side-by-side
    scores count as a choice: the higher score wins, equal scores are a tie."""
    if row["track_b_id"] is None:
        return None
    choice = row["choice"]
    if choice is None and row["score_a"] is not None and row["score_b"] is not None:
        difference = row["score_a"] - row["score_b"]
        return 0.5 if difference == 0 else float(difference > 0)
    return {Vote.Choice.A: 1.0, Vote.Choice.B: 0.0, Vote.Choice.TIE: 0.5}.get(choice)


# --- rater reliability -------------------------------------------------------------------------


@dataclass
class RaterReliability:
    """Agreement of one rater with the majority of the other raters on the same pairs."""

    agreements: float = 0.0
    comparable_votes: int = 0
    pairs: set[int] = field(default_factory=set)

    @property
    def reliability(self) -> float | None:
        if self.comparable_votes < RELIABILITY_MIN_VOTES:
            return None
        return self.agreements / self.comparable_votes


def rater_reliability(votes: QuerySet[Vote] | None = None) -> dict[int, RaterReliability]:
    """Leave-one-out majority agreement per rater: on each pair with other decisive votes, does
    this rater's choice match the majority of the others (an even split counts one half)?
    This is the rater's share of the noise ceiling; gold items will sharpen it."""
    votes = Vote.objects.all() if votes is None else votes
    decisive: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for rater_id, pair_id, target in _pair_targets(votes):
        if target is not None and target != 0.5:
            decisive[pair_id].append((rater_id, target))
    result: dict[int, RaterReliability] = defaultdict(RaterReliability)
    for pair_id, pair_votes in decisive.items():
        if len(pair_votes) < 2:
            continue
        total_a = sum(target for _, target in pair_votes)
        for rater_id, target in pair_votes:
            others_a = total_a - target
            others = len(pair_votes) - 1
            majority = 0.5 if 2 * others_a == others else float(2 * others_a > others)
            agreement = 0.5 if majority == 0.5 else float(majority == target)
            score = result[rater_id]
            score.agreements += agreement
            score.comparable_votes += 1
            score.pairs.add(pair_id)
    return dict(result)


def _pair_targets(votes: QuerySet[Vote]) -> Iterator[tuple[int, int, float | None]]:
    """(rater id, pair id, preference target) for every two-clip vote in `votes`."""
    base = votes.filter(pair__track_b__isnull=False).order_by("id")
    rows = base.values(
        "id", "rater_id", "pair_id", "choice", track_a_id=F("pair__track_a_id"),
        track_b_id=F("pair__track_b_id"),
    )  # fmt: skip
    for batch in _batched(rows.iterator(chunk_size=ROW_BATCH), ROW_BATCH):
        scores = _scores_by_vote([row["id"] for row in batch])
        for row in batch:
            track_scores = scores.get(row["id"], {})
            row["score_a"] = track_scores.get(row["track_a_id"])
            row["score_b"] = track_scores.get(row["track_b_id"])
            yield row["rater_id"], row["pair_id"], preference_target(row)


def gold_accuracy(votes: QuerySet[Vote] | None = None) -> dict[int, float | None]:
    """Per rater, the share of their gold and trap answers in `votes` that were right; None
    with fewer than RELIABILITY_MIN_VOTES such answers."""
    votes = Vote.objects.all() if votes is None else votes
    rows = (
        votes.filter(pair__kind__in=[Pair.Kind.GOLD, Pair.Kind.TRAP], check_passed__isnull=False)
        .values("rater_id")
        .annotate(total=Count("id"), right=Count("id", filter=Q(check_passed=True)))
        .order_by()
    )
    return {
        row["rater_id"]: row["right"] / row["total"]
        if row["total"] >= RELIABILITY_MIN_VOTES
        else None
        for row in rows
    }
