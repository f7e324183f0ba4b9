"""What a vote row is: the fields of one vote on one pair that every per-vote view of the data
shares, with their types and meaning. The research dataset (`ratings.dataset.vote_rows`), the
snapshot files (`ratings.snapshots.schema`) and the researcher API
(`ratings.api.research_serializers`) each lay these out in this order, with their own fields
placed after the shared ones they follow (`vote_layout`), so a vote column added here reaches
all three.

The views differ on purpose in what they add. The dataset is read only by the platform's own
training: it carries the rater's id and the prompt's source. Snapshots and the API are taken
away by researchers: they carry the rater's pseudonym instead, and the pair, the campaign's
name or the audio. The API names related rows as DRF does (`campaign`, not `campaign_id`) and
nests the prompt and the versions. A field with no plain ORM path (the 1-5 scores) is computed
by each view.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

# Types by size, as the snapshot's Arrow columns store them.
FieldType = Literal["int64", "int32", "int16", "bool", "string", "timestamp"]


@dataclass(frozen=True)
class VoteField:
    name: str
    type: FieldType
    meaning: str
    # The ORM path from a Vote to the value; "" where each view computes it.
    path: str = ""
    # A value of the pair (the same for every vote on it), not of the vote: a view may read
    # it once per pair.
    of_pair: bool = False


VOTE_FIELDS: tuple[VoteField, ...] = (
    VoteField("vote_id", "int64", "The vote.", path="id"),
    VoteField("campaign_id", "int64", "The campaign.", path="campaign_id", of_pair=True),
    VoteField(
        "protocol",
        "string",
        "preference (A/B/tie/both bad), side_by_side (both clips scored 1-5) or mos (one clip).",
        path="campaign__protocol",
        of_pair=True,
    ),
    VoteField("prompt_id", "int64", "The prompt.", path="pair__prompt_id", of_pair=True),
    VoteField(
        "prompt_text", "string", "The prompt's text.", path="pair__prompt__text", of_pair=True
    ),
    VoteField(
        "track_a_id",
        "int64",
        "The pair's first clip (not necessarily the one shown left).",
        path="pair__track_a_id",
        of_pair=True,
    ),
    VoteField(
        "track_b_id",
        "int64",
        "The pair's second clip; null for a one-clip (MOS) item.",
        path="pair__track_b_id",
        of_pair=True,
    ),
    VoteField(
        "version_a",
        "string",
        "The generator version that made clip A.",
        path="pair__track_a__generator_version__name",
        of_pair=True,
    ),
    VoteField(
        "version_b",
        "string",
        "The generator version that made clip B.",
        path="pair__track_b__generator_version__name",
        of_pair=True,
    ),
    VoteField("left_is_a", "bool", "Whether clip A was shown on the left.", path="left_is_a"),
    VoteField(
        "choice",
        "string",
        "a, b, tie or both_bad, of the pair's clips; null where the protocol asks for scores.",
        path="choice",
    ),
    # From the vote's MosRating rows, one per clip.
    VoteField("score_a", "int16", "1-5 score of clip A, where asked."),
    VoteField("score_b", "int16", "1-5 score of clip B, where asked."),
    VoteField("listen_ms_a", "int32", "How long clip A was heard (ms).", path="listen_ms_a"),
    VoteField(
        "listen_ms_b",
        "int32",
        "How long clip B was heard (ms); null for a one-clip item.",
        path="listen_ms_b",
    ),
    VoteField(
        "elapsed_ms",
        "int32",
        "Server time from serving the pair to the vote (ms).",
        path="elapsed_ms",
    ),
    VoteField("created_at", "timestamp", "When the vote was recorded.", path="created_at"),
)
VOTE_FIELDS_BY_NAME = {field.name: field for field in VOTE_FIELDS}


Item = TypeVar("Item")


def vote_layout(
    shared: Callable[[VoteField], Item], *, after: Mapping[str, Sequence[Item]] | None = None
) -> list[Item]:
    """A view's vote fields in order: each shared field as the view shows it (`shared`),
    followed by the view's own items listed under that field's name in `after`."""
    after = after or {}
    unknown = set(after) - set(VOTE_FIELDS_BY_NAME)
    if unknown:
        raise ValueError(f"not vote fields: {sorted(unknown)}")
    return [item for field in VOTE_FIELDS for item in (shared(field), *after.get(field.name, ()))]


def vote_field_names(*, after: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The shared field names in order, with a view's own names after the ones they follow."""
    return vote_layout(lambda field: field.name, after=after)
