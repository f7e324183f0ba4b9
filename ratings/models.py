from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class Role(models.TextChoices):
    RATER = "rater"
    RESEARCHER = "researcher"
    ADMIN = "admin"


class Rater(models.Model):
    class Source(models.TextChoices):
        LOCAL = "local"
        PROLIFIC = "prolific"
        MTURK = "mturk"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.RATER)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.LOCAL)
    external_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "external_id"],
                condition=~Q(external_id=""),
                name="rater_unique_external_id",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user.get_username()} ({self.role})"


class Prompt(models.Model):
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
        constraints = [
            models.CheckConstraint(condition=~Q(text=""), name="prompt_text_not_empty"),
        ]

    def __str__(self) -> str:
        return self.text


class Campaign(models.Model):
    class Purpose(models.TextChoices):
        COLLECT = "collect", "Collect (two samples of one version)"
        EVALUATE = "evaluate", "Evaluate (version against version)"

    class Protocol(models.TextChoices):
        PREFERENCE = "preference", "Preference: A / B / tie / both bad"
        SIDE_BY_SIDE = "side_by_side", "Side by side: both clips rated 1-5"
        MOS = "mos", "MOS: one clip rated 1-5 (ACR)"

    class Status(models.TextChoices):
        GENERATING = "generating"
        ACTIVE = "active"
        PAUSED = "paused"
        FINISHED = "finished"
        FAILED = "failed"

    name = models.CharField(max_length=200)
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    protocol = models.CharField(max_length=16, choices=Protocol.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.GENERATING)
    instructions = models.TextField(blank=True)
    version_a = models.ForeignKey(
        "generation.GeneratorVersion", on_delete=models.PROTECT, related_name="+"
    )
    version_b = models.ForeignKey(
        "generation.GeneratorVersion",
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
        help_text="The challenger in an evaluate campaign; empty for collect.",
    )
    prompts = models.ManyToManyField(Prompt, related_name="campaigns")
    votes_per_item = models.PositiveSmallIntegerField(default=3)
    min_listen_seconds = models.FloatField(default=5.0)
    listen_to_end = models.BooleanField(
        default=False, help_text="Require every clip to be heard to its end."
    )
    clip_seconds = models.FloatField(default=10.0)
    generation_total = models.PositiveIntegerField(default=0)
    generation_done = models.PositiveIntegerField(default=0)
    generation_error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(votes_per_item__gte=1, votes_per_item__lte=1000),
                name="campaign_votes_per_item_range",
            ),
            models.CheckConstraint(
                condition=Q(min_listen_seconds__gte=0, min_listen_seconds__lte=600),
                name="campaign_min_listen_range",
            ),
            models.CheckConstraint(
                condition=Q(clip_seconds__gt=0, clip_seconds__lte=120),
                name="campaign_clip_seconds_range",
            ),
            models.CheckConstraint(
                condition=Q(purpose="collect", version_b__isnull=True)
                | Q(purpose="evaluate", version_b__isnull=False),
                name="campaign_versions_match_purpose",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def required_listen_ms(self, clip_duration_seconds: float) -> int:
        """How long each clip must have been heard before a vote counts."""
        clip_ms = int(clip_duration_seconds * 1000)
        if self.listen_to_end:
            # Decoders may stop a frame short of the nominal length; do not demand the
            # impossible last few milliseconds.
            return max(clip_ms - 250, 0)
        return min(int(self.min_listen_seconds * 1000), clip_ms)


class PairQuerySet(models.QuerySet):
    def open_slots(self) -> PairQuerySet:
        return self.filter(slots_taken__lt=F("votes_wanted"))

    def not_served_to(self, rater: Rater) -> PairQuerySet:
        return self.exclude(
            models.Exists(Assignment.objects.filter(pair=models.OuterRef("pk"), rater=rater))
        )


class Pair(models.Model):
    """One rating item: two clips of one prompt, or a single clip for the MOS protocol."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="pairs")
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="+")
    track_a = models.ForeignKey("generation.Track", on_delete=models.PROTECT, related_name="+")
    track_b = models.ForeignKey(
        "generation.Track", on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    votes_wanted = models.PositiveSmallIntegerField()
    vote_count = models.PositiveSmallIntegerField(default=0)
    # Votes plus live leases: what the lease query compares against votes_wanted, so a slot
    # held by a rater who is still listening is not handed to someone else.
    slots_taken = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PairQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["campaign", "track_a"], name="pair_unique_item"),
            models.CheckConstraint(
                condition=Q(vote_count__lte=F("slots_taken"))
                & Q(slots_taken__lte=F("votes_wanted")),
                name="pair_counters_consistent",
            ),
            models.CheckConstraint(condition=~Q(track_a=F("track_b")), name="pair_tracks_differ"),
        ]
        indexes = [
            models.Index(fields=["campaign", "slots_taken", "id"], name="pair_lease_order"),
        ]

    def __str__(self) -> str:
        return f"pair {self.pk} of campaign {self.campaign_id}"


class AssignmentQuerySet(models.QuerySet):
    def live(self, now: datetime) -> AssignmentQuerySet:
        return self.filter(status=Assignment.Status.LIVE, expires_at__gt=now)

    def overdue(self, now: datetime) -> AssignmentQuerySet:
        return self.filter(status=Assignment.Status.LIVE, expires_at__lte=now)


class Assignment(models.Model):
    """A lease of one pair to one rater. Every vote needs one: it records when the clips were
    served (the server's listening check) and which side was shown on the left (blindness)."""

    class Status(models.TextChoices):
        LIVE = "live"
        VOTED = "voted"
        EXPIRED = "expired"

    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="assignments")
    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="assignments")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    left_is_a = models.BooleanField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.LIVE)
    served_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    objects = AssignmentQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pair", "rater"], name="assignment_unique_rater"),
            models.CheckConstraint(
                condition=Q(expires_at__gt=F("served_at")), name="assignment_expiry_after_serve"
            ),
        ]
        indexes = [
            models.Index(
                fields=["rater", "campaign"],
                condition=Q(status="live"),
                name="assignment_live_by_rater",
            ),
            models.Index(
                fields=["expires_at"], condition=Q(status="live"), name="assignment_live_expiry"
            ),
        ]

    def __str__(self) -> str:
        return f"assignment {self.pk} ({self.status})"


class Vote(models.Model):
    class Choice(models.TextChoices):
        A = "a", "Track A"
        B = "b", "Track B"
        TIE = "tie", "Tie"
        BOTH_BAD = "both_bad", "Both bad"

    assignment = models.OneToOneField(Assignment, on_delete=models.PROTECT, related_name="vote")
    pair = models.ForeignKey(Pair, on_delete=models.PROTECT, related_name="votes")
    rater = models.ForeignKey(Rater, on_delete=models.PROTECT, related_name="votes")
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="votes")
    # In terms of the pair's track_a / track_b, never of the screen sides. NULL (not "") for
    # the scored protocols, so "no choice was asked" cannot be mistaken for a value.
    choice = models.CharField(  # noqa: DJ001
        max_length=8, choices=Choice.choices, null=True, blank=True
    )
    left_is_a = models.BooleanField()
    listen_ms_a = models.PositiveIntegerField()
    listen_ms_b = models.PositiveIntegerField(null=True, blank=True)
    elapsed_ms = models.PositiveIntegerField(help_text="Server time from serving to voting.")
    idempotency_key = models.UUIDField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pair", "rater"], name="vote_unique_per_rater"),
            models.UniqueConstraint(
                fields=["rater", "idempotency_key"], name="vote_unique_idempotency_key"
            ),
            models.CheckConstraint(
                condition=Q(choice__isnull=True) | Q(choice__in=["a", "b", "tie", "both_bad"]),
                name="vote_choice_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["campaign", "created_at"], name="vote_by_campaign"),
            models.Index(fields=["rater", "campaign"], name="vote_by_rater"),
        ]

    def __str__(self) -> str:
        return f"vote {self.pk} on pair {self.pair_id}"


class MosRating(models.Model):
    """A 1-5 score for one clip (ACR scale), given in the side-by-side or MOS protocol."""

    class Score(models.IntegerChoices):
        BAD = 1
        POOR = 2
        FAIR = 3
        GOOD = 4
        EXCELLENT = 5

    vote = models.ForeignKey(Vote, on_delete=models.PROTECT, related_name="ratings")
    track = models.ForeignKey("generation.Track", on_delete=models.PROTECT, related_name="+")
    rater = models.ForeignKey(Rater, on_delete=models.PROTECT, related_name="ratings")
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="ratings")
    score = models.PositiveSmallIntegerField(choices=Score.choices)
    listen_ms = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["track", "rater", "campaign"], name="rating_unique_per_rater"
            ),
            models.CheckConstraint(
                condition=Q(score__gte=1, score__lte=5), name="rating_score_1_to_5"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.score} for {self.track_id}"
