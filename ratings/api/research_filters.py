"""Query-string filters of the researcher API. Lists take comma-separated ids (`?campaign=1,2`)
and time ranges as `<field>_after` / `<field>_before` (ISO 8601, inclusive / exclusive as
django-filter defines them)."""

import django_filters
from django import forms
from django.db.models import Exists, OuterRef, Q, QuerySet

from generation.models import Prompt, Track
from ratings.models import Campaign, MosRating, Pair, Vote
from ratings.pseudonyms import rater_ids_with_pseudonym

# The largest value of PostgreSQL's bigint, the type of every id: a larger number in a query
# string would reach the database and fail there (a 500) instead of failing the form (a 400).
MAX_ID = 2**63 - 1


class IdInFilter(django_filters.BaseInFilter, django_filters.NumberFilter):
    """Comma-separated whole numbers within the column's range; anything else is a 400."""

    field_class = forms.IntegerField

    def __init__(self, *args, min_value: int = 1, max_value: int = MAX_ID, **kwargs) -> None:
        super().__init__(*args, min_value=min_value, max_value=max_value, **kwargs)


def _by_pseudonym(queryset: QuerySet, name: str, value: str) -> QuerySet:
    # Raters are filtered by the pseudonym the rows show, never by their real id.
    return queryset.filter(rater_id__in=rater_ids_with_pseudonym(value))


class VoteFilter(django_filters.FilterSet):
    campaign = IdInFilter(field_name="campaign_id", help_text="Campaign ids, comma-separated.")
    protocol = django_filters.MultipleChoiceFilter(
        field_name="campaign__protocol", choices=Campaign.Protocol.choices
    )
    generator_version = IdInFilter(
        method="filter_generator_version",
        help_text="Generator version ids (either side of the pair), comma-separated.",
    )
    choice = django_filters.MultipleChoiceFilter(choices=Vote.Choice.choices)
    rater = django_filters.CharFilter(method=_by_pseudonym, help_text="A rater pseudonym.")
    pair = IdInFilter(field_name="pair_id", help_text="Pair ids, comma-separated.")
    prompt = IdInFilter(field_name="pair__prompt_id", help_text="Prompt ids, comma-separated.")
    created_at = django_filters.IsoDateTimeFromToRangeFilter()

    class Meta:
        model = Vote
        fields: list[str] = []

    def filter_generator_version(self, queryset: QuerySet, name: str, value: list) -> QuerySet:
        return queryset.filter(
            Q(pair__track_a__generator_version_id__in=value)
            | Q(pair__track_b__generator_version_id__in=value)
        )


class RatingFilter(django_filters.FilterSet):
    campaign = IdInFilter(field_name="campaign_id", help_text="Campaign ids, comma-separated.")
    protocol = django_filters.MultipleChoiceFilter(
        field_name="campaign__protocol", choices=Campaign.Protocol.choices
    )
    generator_version = IdInFilter(
        field_name="track__generator_version_id", help_text="Generator version ids."
    )
    score = IdInFilter(
        field_name="score",
        min_value=MosRating.Score.values[0],
        max_value=MosRating.Score.values[-1],
        help_text="Scores (1-5), comma-separated.",
    )
    vote = IdInFilter(field_name="vote_id", help_text="Vote ids, comma-separated.")
    rater = django_filters.CharFilter(method=_by_pseudonym, help_text="A rater pseudonym.")
    created_at = django_filters.IsoDateTimeFromToRangeFilter()

    class Meta:
        model = MosRating
        fields: list[str] = []


class PromptFilter(django_filters.FilterSet):
    campaign = IdInFilter(
        field_name="campaigns", distinct=True, help_text="Campaign ids, comma-separated."
    )
    source = django_filters.MultipleChoiceFilter(choices=Prompt.Source.choices)
    text = django_filters.CharFilter(lookup_expr="icontains", help_text="Part of the text.")
    created_at = django_filters.IsoDateTimeFromToRangeFilter()

    class Meta:
        model = Prompt
        fields: list[str] = []


class TrackFilter(django_filters.FilterSet):
    campaign = IdInFilter(method="filter_campaign", help_text="Tracks in these campaigns' pairs.")
    generator_version = IdInFilter(
        field_name="generator_version_id", help_text="Generator version ids, comma-separated."
    )
    prompt = IdInFilter(field_name="prompt_id", help_text="Prompt ids, comma-separated.")
    created_at = django_filters.IsoDateTimeFromToRangeFilter()

    class Meta:
        model = Track
        fields: list[str] = []

    def filter_campaign(self, queryset: QuerySet, name: str, value: list) -> QuerySet:
        # Pairs point at tracks without a reverse name, so a subquery asks for either side.
        in_pairs = Pair.objects.filter(campaign_id__in=value).filter(
            Q(track_a=OuterRef("pk")) | Q(track_b=OuterRef("pk"))
        )
        return queryset.filter(Exists(in_pairs))


class CampaignFilter(django_filters.FilterSet):
    protocol = django_filters.MultipleChoiceFilter(choices=Campaign.Protocol.choices)
    purpose = django_filters.MultipleChoiceFilter(choices=Campaign.Purpose.choices)
    status = django_filters.MultipleChoiceFilter(choices=Campaign.Status.choices)
    generator_version = IdInFilter(
        method="filter_generator_version", help_text="Generator version ids (A or B side)."
    )
    created_at = django_filters.IsoDateTimeFromToRangeFilter()

    class Meta:
        model = Campaign
        fields: list[str] = []

    def filter_generator_version(self, queryset: QuerySet, name: str, value: list) -> QuerySet:
        return queryset.filter(Q(version_a_id__in=value) | Q(version_b_id__in=value))
