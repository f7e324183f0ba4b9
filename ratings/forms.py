from django import forms

from generation.models import GeneratorVersion
from generation.music.variants import VARIANT_AXES
from ratings.campaigns import variants_check
from ratings.errors import InvalidVote
from ratings.models import Campaign

MAX_PROMPTS = 500


class CampaignForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="For admins; raters never see it.")
    rater_title = forms.CharField(
        max_length=200, required=False, help_text=Campaign._meta.get_field("rater_title").help_text
    )
    purpose = forms.ChoiceField(choices=Campaign.Purpose.choices)
    protocol = forms.ChoiceField(choices=Campaign.Protocol.choices)
    version_a = forms.ModelChoiceField(
        GeneratorVersion.objects.exclude(status=GeneratorVersion.Status.RETIRED),
        label="Generator version",
    )
    version_b = forms.ModelChoiceField(
        GeneratorVersion.objects.exclude(status=GeneratorVersion.Status.RETIRED),
        required=False,
        label="Challenger version (evaluate only)",
    )
    prompts = forms.CharField(widget=forms.Textarea(attrs={"rows": 8}), help_text="One per line.")
    votes_per_item = forms.IntegerField(min_value=1, max_value=1000, initial=3)
    min_listen_seconds = forms.FloatField(min_value=0, max_value=600, initial=5.0)
    listen_to_end = forms.BooleanField(required=False)
    clip_seconds = forms.FloatField(min_value=1, max_value=60, initial=10.0)
    instructions = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    qualification_required = forms.BooleanField(
        required=False,
        help_text="Raters pass the campaign's listening check before real items are served.",
    )
    # Optional, so forms and scripts that predate these settings keep the model's defaults.
    qualification_valid_hours = forms.FloatField(
        min_value=0.1,
        max_value=24 * 365,
        required=False,
        initial=24.0,
        help_text="How long a qualification result holds, in hours.",
    )
    check_rate = forms.FloatField(
        min_value=0,
        max_value=0.5,
        required=False,
        initial=0.0,
        help_text="Share of served items that are gold or trap checks (0.1: about one in ten).",
    )
    quality_policy = forms.ChoiceField(
        choices=Campaign.QualityPolicy.choices,
        required=False,
        initial=Campaign.QualityPolicy.NONE,
    )
    pair_selection = forms.ChoiceField(
        choices=Campaign.PairSelection.choices,
        required=False,
        initial=Campaign.PairSelection.UNIFORM,
    )
    variant_axes = forms.MultipleChoiceField(
        choices=[(axis, axis) for axis in VARIANT_AXES],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Collect campaigns: pair a share of the clips with a variant that differs "
        "along one of these axes, so votes say which axes raters care about.",
    )
    variant_share = forms.FloatField(
        min_value=0.01, max_value=1, required=False, initial=0.5,
        help_text="Share of the pairs that are a clip and its variant.",
    )  # fmt: skip

    # Recruitment from Prolific / MTurk (ratings.recruitment): the join page shows the consent
    # text, and a finished crowd session shows the completion code or goes to the URL.
    consent_text = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    completion_code = forms.CharField(max_length=64, required=False)
    completion_url = forms.URLField(
        required=False,
        assume_scheme="https",
        help_text="Where a finished session is sent; {code} is replaced by the completion code "
        "(Prolific: https://app.prolific.com/submissions/complete?cc={code}).",
    )
    votes_per_session = forms.IntegerField(
        min_value=1, max_value=10_000, required=False, help_text="Items in one crowd session."
    )
    max_votes_per_rater = forms.IntegerField(
        min_value=1, max_value=100_000, required=False, help_text="Cap per rater in this campaign."
    )

    crowd_study_ids = forms.CharField(
        required=False,
        label="Crowd study ids",
        help_text="Prolific STUDY_IDs or MTurk hitIds, comma-separated, whose links may enter;"
        " empty: any study's.",
    )

    SETTING_FIELDS = (
        "rater_title", "qualification_required", "qualification_valid_hours", "check_rate",
        "quality_policy", "pair_selection", "consent_text", "completion_code", "completion_url",
        "votes_per_session", "max_votes_per_rater", "variant_axes", "variant_share",
        "crowd_study_ids",
    )  # fmt: skip

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # New collection should use the version admins promoted, so it is preselected.
        # The newest active one: promoting a candidate does not retire the versions before it.
        self.fields["version_a"].initial = (
            GeneratorVersion.objects.filter(status=GeneratorVersion.Status.ACTIVE)
            .order_by("-created_at", "-pk")
            .first()
        )

    def campaign_settings(self) -> dict:
        """The quality, selection and recruitment settings, as keyword arguments of
        campaign_create; the model's defaults for those left empty."""
        settings = {}
        for name in self.SETTING_FIELDS:
            value = self.cleaned_data.get(name)
            empty = value is None or value == ""
            settings[name] = Campaign._meta.get_field(name).get_default() if empty else value
        return settings

    def clean_crowd_study_ids(self) -> list[str]:
        raw = self.cleaned_data.get("crowd_study_ids") or ""
        ids = list(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
        if any(len(study_id) > 128 for study_id in ids):
            raise forms.ValidationError("A study id is at most 128 characters long.")
        return ids

    def clean_prompts(self) -> list[str]:
        lines = [line.strip() for line in self.cleaned_data["prompts"].splitlines()]
        prompts = list(dict.fromkeys(line for line in lines if line))
        if not prompts:
            raise forms.ValidationError("Give at least one prompt.")
        if len(prompts) > MAX_PROMPTS:
            raise forms.ValidationError(f"At most {MAX_PROMPTS} prompts per campaign.")
        if any(len(prompt) > 500 for prompt in prompts):
            raise forms.ValidationError("A prompt may be at most 500 characters long.")
        return prompts

    def clean(self) -> dict:
        data = super().clean()
        purpose, version_b = data.get("purpose"), data.get("version_b")
        if purpose == Campaign.Purpose.EVALUATE:
            if version_b is None:
                self.add_error("version_b", "An evaluate campaign needs a challenger version.")
            elif version_b == data.get("version_a"):
                self.add_error("version_b", "Choose two different versions.")
        elif version_b is not None:
            self.add_error("version_b", "A collect campaign uses one version only.")
        axes, version = data.get("variant_axes"), data.get("version_a")
        if axes and version is not None:
            share = data.get("variant_share") or Campaign._meta.get_field("variant_share").default
            try:
                variants_check(purpose, data.get("protocol"), version, axes, share)
            except InvalidVote as error:
                self.add_error("variant_axes", error.message)
        return data
