from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils import timezone


class TrainingJob(models.Model):
    """What every long training job shares: a status, progress and curves for its page, and a
    heartbeat. A worker claims a job by stamping the heartbeat; a job whose heartbeat went
    stale (its worker died) can be claimed again and resumes from its last checkpoint."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    steps = models.PositiveIntegerField()
    step = models.PositiveIntegerField(default=0)
    phase = models.CharField(max_length=100, blank=True, help_text="What the job is doing now.")
    curve = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker claimed it.")
    resumed_from_steps = models.JSONField(
        default=list, blank=True, help_text="The checkpoint step each resumed attempt started at."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    @property
    def percent_done(self) -> float:
        return round(100 * self.step / self.steps, 1) if self.steps else 0.0

    def heartbeat_age_seconds(self) -> float | None:
        if self.heartbeat_at is None:
            return None
        return (timezone.now() - self.heartbeat_at).total_seconds()


class RewardModel(TrainingJob):
    class Kind(models.TextChoices):
        PREFERENCE = "preference", "Preference (Bradley-Terry on pairwise votes)"
        QUALITY = "quality", "Quality (regression to 1-5 ratings)"
        ADHERENCE = "adherence", "Prompt adherence"

    class Method(models.TextChoices):
        LEARNED = "learned", "Learned network"
        # The exact check of a symbolic piece against the prompt's attributes: nothing to
        # train, but it is evaluated on the same held-out corpus as the learned tower.
        ATTRIBUTE_MATCH = "attribute_match", "Exact attribute match (symbolic backends)"
        # Bradley-Terry over a dozen features measured from the notes: learns a taste from a
        # few hundred votes, where an audio network needs thousands (reward/learning/measured).
        MEASURED = "measured", "Measured musical features (symbolic backends)"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    method = models.CharField(max_length=16, choices=Method.choices, default=Method.LEARNED)
    data_filters = models.JSONField(default=dict, blank=True)
    data_summary = models.JSONField(
        default=dict, blank=True, help_text="Row counts and the sha256 of the rows trained on."
    )
    config = models.JSONField(default=dict, blank=True)
    checkpoint = models.CharField(max_length=500, blank=True, help_text="The scorer file.")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(steps__gte=1), name="reward_steps_min"),
            models.CheckConstraint(
                condition=models.Q(method="learned")
                | models.Q(method="attribute_match", kind="adherence")
                | models.Q(method="measured", kind="preference"),
                name="reward_method_fits_kind",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def method_fits_kind(cls, method: str, kind: str) -> bool:
        """The learned networks exist for every kind; the other methods for one kind each."""
        only_for = {
            cls.Method.ATTRIBUTE_MATCH: cls.Kind.ADHERENCE,
            cls.Method.MEASURED: cls.Kind.PREFERENCE,
        }
        return method not in only_for or only_for[method] == kind

    @property
    def directory(self) -> Path:
        return Path(settings.REWARD_DIR) / f"reward-model-{self.pk}"

    @property
    def usable(self) -> bool:
        """Fine-tuning may use a model only once it finished and its metrics are recorded."""
        return (
            self.status == self.Status.FINISHED
            and bool(self.metrics.get("heldout"))
            and (self.method == self.Method.ATTRIBUTE_MATCH or bool(self.checkpoint))
        )

    def scorer_path(self) -> Path:
        path = Path(self.checkpoint)
        return path if path.is_absolute() else Path(settings.BASE_DIR) / path


class TrackReward(models.Model):
    """A track's score under one reward model, for the admin's track pages and for RL."""

    track = models.ForeignKey("generation.Track", on_delete=models.CASCADE, related_name="rewards")
    reward_model = models.ForeignKey(RewardModel, on_delete=models.CASCADE, related_name="scores")
    value = models.FloatField()
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["track", "reward_model"], name="track_reward_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.reward_model}: {self.value:.3f} for {self.track}"


class FineTuneRun(TrainingJob):
    """RL fine-tuning (RLOO) or DPO of a learned generator version; ends by registering a
    candidate GeneratorVersion whose parent is the base."""

    class Algorithm(models.TextChoices):
        RLOO = "rloo", "RLOO with reward models"
        DPO = "dpo", "DPO on stored preference pairs"

    class Preset(models.TextChoices):
        R = "R", "R: adherence + quality"
        U = "U", "U: user preference"
        RU = "RU", "RU: R first, then U from the R result"
        CUSTOM = "custom", "Custom reward mix"

    name = models.CharField(max_length=100, unique=True)
    base_version = models.ForeignKey(
        "generation.GeneratorVersion", on_delete=models.PROTECT, related_name="fine_tune_runs"
    )
    algorithm = models.CharField(max_length=8, choices=Algorithm.choices)
    preset = models.CharField(max_length=8, choices=Preset.choices, default=Preset.CUSTOM)
    # Stages run one after another (RU has two); each is {"rewards": {reward model id: weight},
    # "steps": n}. The KL of a stage is measured against the model the stage started from.
    stages = models.JSONField(default=list)
    stage = models.PositiveSmallIntegerField(default=0, help_text="The stage running now.")
    settings = models.JSONField(default=dict, blank=True)
    data_filters = models.JSONField(default=dict, blank=True, help_text="DPO: the votes used.")
    data_summary = models.JSONField(default=dict, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    samples = models.JSONField(
        default=list, blank=True, help_text="Tracks sampled at checkpoints: step, prompt, track."
    )
    result_version = models.OneToOneField(
        "generation.GeneratorVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="made_by_run",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(steps__gte=1), name="finetune_steps_min"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def directory(self) -> Path:
        return Path(settings.REWARD_DIR) / f"finetune-{self.pk}"


class Evaluation(models.Model):
    """An evaluate campaign (candidate vs its parent) and the report computed from its votes."""

    campaign = models.OneToOneField(
        "ratings.Campaign", on_delete=models.CASCADE, related_name="evaluation"
    )
    candidate = models.ForeignKey(
        "generation.GeneratorVersion", on_delete=models.PROTECT, related_name="+"
    )
    baseline = models.ForeignKey(
        "generation.GeneratorVersion", on_delete=models.PROTECT, related_name="+"
    )
    fine_tune_run = models.ForeignKey(
        FineTuneRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluations"
    )
    report = models.JSONField(default=dict, blank=True)
    computed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.candidate} vs {self.baseline}"
