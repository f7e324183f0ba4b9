"""The vote row has one definition (ratings.vote_fields): the research dataset, the snapshot
files and the researcher API each show every shared field, in its order and with its type,
and add their own fields around them."""

from collections.abc import Iterable

import pytest

from ratings.api.research_serializers import VOTE_API_NAMES, ResearchVoteSerializer
from ratings.dataset import VOTE_COLUMNS, DataFilters, vote_rows
from ratings.models import Campaign
from ratings.snapshots.schema import ARROW_TYPES, VOTE_PATHS, _vote_columns
from ratings.vote_fields import VOTE_FIELDS, vote_field_names, vote_layout
from tests.factories import CampaignFactory, PairFactory, RaterFactory, vote_on

SHARED = [field.name for field in VOTE_FIELDS]


def in_order(names: Iterable[str], within: Iterable[str]) -> bool:
    remaining = iter(within)
    return all(name in remaining for name in names)


@pytest.mark.parametrize("in_snapshot", [False, True])
def test_the_snapshot_holds_every_shared_vote_field_in_order_with_its_type(in_snapshot):
    columns = {c.name: c for c in _vote_columns(in_snapshot=in_snapshot)}

    assert in_order(SHARED, columns)
    assert in_order(SHARED, VOTE_PATHS)
    assert all(columns[f.name].type == ARROW_TYPES[f.type] for f in VOTE_FIELDS)
    assert list(columns)[:4] == ["vote_id", "pair_id", "campaign_id", "campaign_name"]


def test_the_dataset_reads_every_shared_vote_field_in_order():
    read = [field.name for field in VOTE_FIELDS if field.path]

    assert in_order(read, VOTE_COLUMNS)
    assert set(VOTE_COLUMNS) - set(SHARED) == {"prompt_source", "rater_id"}


def test_the_research_api_shows_every_shared_vote_field_in_order_under_its_api_name():
    api_names = [VOTE_API_NAMES.get(name, name) for name in SHARED]

    assert in_order(dict.fromkeys(api_names), ResearchVoteSerializer.Meta.fields)
    assert set(ResearchVoteSerializer.Meta.fields) - set(api_names) == {"pair", "rater"}


@pytest.mark.django_db
def test_a_stored_vote_has_every_shared_field_in_the_dataset_and_the_api():
    pair = PairFactory(campaign=CampaignFactory(protocol=Campaign.Protocol.SIDE_BY_SIDE))
    vote = vote_on(pair, RaterFactory(), scores=(4, 2))

    [row] = vote_rows(DataFilters())
    shown = ResearchVoteSerializer(vote).data

    assert set(SHARED) <= set(row) and (row["score_a"], row["score_b"]) == (4, 2)
    assert list(shown) == ResearchVoteSerializer.Meta.fields
    assert (shown["score_a"], shown["score_b"]) == (4, 2)


def test_a_view_places_its_own_fields_after_the_shared_field_it_names():
    names = vote_field_names(after={"vote_id": ["pair_id"], "created_at": ["note"]})

    assert names == [SHARED[0], "pair_id", *SHARED[1:], "note"]
    with pytest.raises(ValueError, match="not vote fields"):
        vote_layout(lambda field: field.name, after={"rater": ["x"]})
