from django import forms

from ratings.models import Campaign
from reward.models import RewardModel


class RewardModelForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=RewardModel.Kind.choices)
    method = forms.ChoiceField(choices=RewardModel.Method.choices, initial="learned")
    steps = forms.IntegerField(min_value=1, max_value=1_000_000, initial=400)
    campaigns = forms.ModelMultipleChoiceField(
        Campaign.objects.order_by("-created_at"),
        required=False,
        help_text="None selected: every campaign.",
    )
    protocols = forms.MultipleChoiceField(
        choices=Campaign.Protocol.choices, required=False, help_text="None selected: all."
    )
    since = forms.DateTimeField(required=False, help_text="Votes from this time on.")
    until = forms.DateTimeField(required=False, help_text="Votes before this time.")
    min_rater_reliability = forms.FloatField(
        min_value=0,
        max_value=1,
        required=False,
        help_text="Leave out raters who agree with the others' majority less often than this.",
    )
    learning_rate = forms.FloatField(min_value=1e-6, max_value=1, initial=1e-3)
    batch_size = forms.IntegerField(min_value=1, max_value=4096, initial=32)
    test_share = forms.FloatField(
        min_value=0.01, max_value=0.99, initial=0.2, help_text="Share of prompts held out."
    )

    def clean(self) -> dict:
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] >= data["until"]:
            self.add_error("until", "The end must come after the start.")
        if (
            data.get("method") == RewardModel.Method.ATTRIBUTE_MATCH
            and data.get("kind") != RewardModel.Kind.ADHERENCE
        ):
            self.add_error("method", "The attribute match is an adherence reward.")
        if RewardModel.objects.filter(name=data.get("name", "")).exists():
            self.add_error("name", "A reward model with this name exists already.")
        return data
