from django import forms

from generation.models import GeneratorVersion
from ratings.models import Campaign

MAX_PROMPTS = 500


class CampaignForm(forms.Form):
    name = forms.CharField(max_length=200)
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

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # New collection should use the version admins promoted, so it is preselected.
        # The newest active one: promoting a candidate does not retire the versions before it.
        self.fields["version_a"].initial = (
            GeneratorVersion.objects.filter(status=GeneratorVersion.Status.ACTIVE)
            .order_by("-created_at", "-pk")
            .first()
        )

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
        return data
