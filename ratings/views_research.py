"""The researcher page: campaign summaries with rater agreement, dataset snapshots and a form
to request one (researcher and above)."""

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from generation.models import GeneratorVersion
from ratings import selectors
from ratings.dataset import DataFilters
from ratings.models import Campaign, Role, Vote
from ratings.snapshots import FORMATS, SnapshotError, snapshot_create
from ratings.views import role_required


class SnapshotForm(forms.Form):
    """The page's version of the API's snapshot request; empty choices mean "all"."""

    name = forms.CharField(max_length=200, required=False)
    campaigns = forms.ModelMultipleChoiceField(
        Campaign.objects.order_by("-created_at", "-id"), required=False
    )
    protocols = forms.MultipleChoiceField(
        choices=Campaign.Protocol.choices, required=False, widget=forms.CheckboxSelectMultiple
    )
    versions = forms.ModelMultipleChoiceField(
        GeneratorVersion.objects.order_by("name"), required=False, label="Generator versions"
    )
    since = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="UTC.",
    )  # fmt: skip
    until = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="UTC, exclusive.",
    )  # fmt: skip
    min_rater_reliability = forms.FloatField(
        min_value=0, max_value=1, required=False,
        help_text="Leave out raters who agree with the others less often than this (0-1).",
    )  # fmt: skip
    min_gold_accuracy = forms.FloatField(
        min_value=0, max_value=1, required=False,
        help_text="Leave out raters who answer gold checks right less often than this (0-1).",
    )  # fmt: skip
    vote_statuses = forms.MultipleChoiceField(
        choices=Vote.Status.choices, initial=[Vote.Status.COUNTED], required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Flagged and rejected votes are kept; add them to study them.",
    )  # fmt: skip
    include_ties = forms.BooleanField(required=False, initial=True)
    include_both_bad = forms.BooleanField(required=False, initial=True)
    formats = forms.MultipleChoiceField(
        choices=[(fmt, fmt) for fmt in FORMATS], initial=["jsonl", "parquet"],
        widget=forms.CheckboxSelectMultiple,
    )  # fmt: skip
    include_audio = forms.BooleanField(required=False)
    stable_rater_ids = forms.BooleanField(
        required=False, help_text="The pseudonyms the API shows, instead of ones new to this file."
    )

    def to_filters(self) -> DataFilters:
        data = self.cleaned_data
        return DataFilters(
            campaign_ids=tuple(campaign.pk for campaign in data["campaigns"]),
            protocols=tuple(data["protocols"]),
            version_ids=tuple(version.pk for version in data["versions"]),
            since=data["since"],
            until=data["until"],
            min_rater_reliability=data["min_rater_reliability"],
            min_gold_accuracy=data["min_gold_accuracy"],
            vote_statuses=tuple(data["vote_statuses"] or (Vote.Status.COUNTED,)),
            include_ties=data["include_ties"],
            include_both_bad=data["include_both_bad"],
        )


@require_http_methods(["GET", "POST"])
@role_required(Role.RESEARCHER)
def research_home(request: HttpRequest) -> HttpResponse:
    """Researcher and above: campaign summaries, snapshots, and POST to request a snapshot."""
    form = SnapshotForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            snapshot_create(
                filters=form.to_filters(), formats=data["formats"],
                include_audio=data["include_audio"], stable_rater_ids=data["stable_rater_ids"],
                name=data["name"], created_by=request.user,
            )  # fmt: skip
        except SnapshotError as error:
            form.add_error(None, str(error))
        else:
            return redirect("research")
    context = {
        "summaries": selectors.campaign_summaries(),
        "snapshots": selectors.snapshot_summaries(),
        "form": form,
    }
    status = 400 if request.method == "POST" else 200
    return render(request, "ratings/research.html", context, status=status)
