from django import forms

from generation.models import GeneratorVersion
from ratings.models import Campaign
from reward.models import FineTuneRun, RewardModel


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
    min_gold_accuracy = forms.FloatField(
        min_value=0,
        max_value=1,
        required=False,
        help_text="Leave out raters who answer gold checks right less often than this.",
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
        method, kind = data.get("method"), data.get("kind")
        if method and not RewardModel.method_fits_kind(method, kind):
            self.add_error("method", "This method is for another kind of reward model.")
        if RewardModel.objects.filter(name=data.get("name", "")).exists():
            self.add_error("name", "A reward model with this name exists already.")
        return data


class FineTuneRunForm(forms.Form):
    """A fine-tuning run: the base version, the algorithm, the rewards, the main settings.
    A weight field appears for every usable reward model (for the custom mix)."""

    name = forms.CharField(max_length=100)
    base_version = forms.ModelChoiceField(
        GeneratorVersion.objects.filter(backend="symbolic").exclude(
            status=GeneratorVersion.Status.RETIRED
        ),
        help_text="A learned (symbolic) version.",
    )
    algorithm = forms.ChoiceField(choices=FineTuneRun.Algorithm.choices, initial="rloo")
    preset = forms.ChoiceField(
        choices=FineTuneRun.Preset.choices,
        initial="U",
        help_text="R: adherence + quality; U: preference; RU: R, then U from its result. "
        "Presets use the newest usable model of each kind.",
    )
    steps = forms.IntegerField(min_value=1, max_value=100_000, initial=100, help_text="Per stage.")
    learning_rate = forms.FloatField(min_value=1e-8, max_value=1e-2, initial=2e-5)
    beta = forms.FloatField(min_value=0, max_value=100, initial=0.05, label="KL beta")
    kl_loss = forms.FloatField(
        min_value=0, max_value=100, initial=0.5, label="Per-token KL weight",
        help_text="Pulls each token's probability back towards the starting model.",
    )  # fmt: skip
    samples_per_prompt = forms.IntegerField(min_value=2, max_value=32, initial=4, label="K")
    prompts_per_step = forms.IntegerField(min_value=1, max_value=64, initial=8)
    kl_limit = forms.FloatField(min_value=0, initial=40.0, help_text="Nats per sequence.")
    estimator = forms.ChoiceField(
        choices=[("rloo", "RLOO: every sample's advantage"),
                 ("best_of_group", "best of group: each prompt's best sample")],
        initial="rloo",
        help_text="RLOO only: how a step learns from the K samples of each prompt.",
    )  # fmt: skip
    guard_action = forms.ChoiceField(
        choices=[("warn", "warn"), ("stop", "stop")],
        help_text="What to do when the KL or the sample diversity passes its limit.",
    )
    campaigns = forms.ModelMultipleChoiceField(
        Campaign.objects.order_by("-created_at"),
        required=False,
        help_text="DPO: the votes to learn from (none selected: every campaign).",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reward_models = [m for m in RewardModel.objects.order_by("-created_at") if m.usable]
        for reward_model in self.reward_models:
            self.fields[f"weight_{reward_model.pk}"] = forms.FloatField(
                min_value=0, max_value=100, required=False, initial=0,
                label=f"Weight of {reward_model.name} ({reward_model.kind}), custom mix only",
            )  # fmt: skip

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if FineTuneRun.objects.filter(name=name).exists():
            raise forms.ValidationError("A run with this name exists already.")
        return name

    def reward_weights(self) -> dict[int, float]:
        return {
            model.pk: self.cleaned_data[f"weight_{model.pk}"]
            for model in self.reward_models
            if self.cleaned_data.get(f"weight_{model.pk}")
        }
