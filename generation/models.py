import uuid
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import models


class GeneratorVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate"
        ACTIVE = "active"
        RETIRED = "retired"

    name = models.CharField(max_length=100, unique=True)
    backend = models.CharField(max_length=50, help_text="Name in generation.music.backends.")
    config = models.JSONField(default=dict, blank=True)
    checkpoint = models.CharField(max_length=500, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    pretraining_run = models.ForeignKey(
        "generation.PretrainingRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="versions",
        help_text="The pretraining run that produced this version, if any.",
    )
    metrics = models.JSONField(default=dict, blank=True)
    arena_enabled = models.BooleanField(
        default=False,
        help_text="Battles against other enabled versions in the playground's arena mode.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    def backend_config(self) -> dict:
        """The backend's config, with the checkpoint resolved: a relative path is relative to
        the project, so a checkpoint shipped in the repository works from any checkout."""
        config = dict(self.config)
        if self.checkpoint:
            config["checkpoint"] = str(Path(settings.BASE_DIR) / self.checkpoint)
        return config

    def lineage(self) -> list["GeneratorVersion"]:
        """This version and its ancestors, newest first."""
        chain, seen, version = [], set(), self
        while version is not None and version.pk not in seen:
            chain.append(version)
            seen.add(version.pk)
            version = version.parent
        return chain


class PretrainingRun(models.Model):
    """Pretraining of the learned generator on the composer's captioned corpus."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"

    size = models.CharField(max_length=16, default="small")
    steps = models.PositiveIntegerField()
    # TrainConfig fields the run sets beyond its size (generation.pretraining.RUN_SETTINGS).
    settings = models.JSONField(default=dict, blank=True)
    starts_from = models.ForeignKey(
        GeneratorVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="continued_by",
        help_text="The version whose weights the run starts from (a warm start), if any; "
        "the run's version is its child.",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    step = models.PositiveIntegerField(default=0)
    loss_curve = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(steps__gte=1), name="pretraining_steps_min"),
        ]

    def __str__(self) -> str:
        return f"pretraining run {self.pk} ({self.size}, {self.status})"

    @property
    def directory(self) -> Path:
        return Path(settings.GENERATOR_DIR) / f"pretraining-{self.pk}"


def opaque_audio_path(track: "Track", filename: str) -> str:
    # The stored name is the track's random public id only: nothing in it (version, prompt,
    # order, time) can tell a rater which generator made the clip.
    extension = PurePosixPath(filename).suffix or ".ogg"
    return f"audio/{track.public_id.hex}{extension}"


class Prompt(models.Model):
    """A text that clips are generated for: curated, typed by a user, or from the playground."""

    class Source(models.TextChoices):
        CURATED = "curated"
        USER = "user"
        PLAYGROUND = "playground"

    text = models.CharField(max_length=500)
    attributes = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.CURATED)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "ratings_prompt"  # its table from when ratings owned prompts (migration 0006)
        constraints = [
            models.CheckConstraint(condition=~models.Q(text=""), name="prompt_text_not_empty"),
        ]

    def __str__(self) -> str:
        return self.text


class Track(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="tracks")
    generator_version = models.ForeignKey(
        GeneratorVersion, on_delete=models.PROTECT, related_name="tracks"
    )
    seed = models.BigIntegerField()
    audio = models.FileField(upload_to=opaque_audio_path, max_length=200)
    mime_type = models.CharField(max_length=50, default="audio/ogg")
    duration_seconds = models.FloatField()
    sample_rate = models.PositiveIntegerField()
    caption = models.TextField(blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    # The symbolic events behind the audio: what a learned generator's log-probs are over.
    events = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(duration_seconds__gt=0), name="track_duration_positive"
            ),
            # Seeds are derived from (campaign, prompt, side), so a retried generation job
            # finds the track it already made instead of rendering a second one.
            models.UniqueConstraint(
                fields=["prompt", "generator_version", "seed"], name="track_unique_sample"
            ),
        ]

    def __str__(self) -> str:
        return f"track {self.public_id.hex[:8]}"
