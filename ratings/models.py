from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.core.files.storage import storages
from django.db import models, transaction
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
        GUEST = "guest", "Guest (an anonymous playground visitor)"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.RATER)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.LOCAL)
    external_id = models.CharField(max_length=100, blank=True)
    vote_quota = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most votes this rater may cast in all; empty: no limit."
    )
    # Refreshed by ratings.quality from the rater's counted votes (None: too few to tell).
    gold_accuracy = models.FloatField(null=True, blank=True)
    majority_agreement = models.FloatField(null=True, blank=True)
    score_correlation = models.FloatField(null=True, blank=True)
    reliability_updated_at = models.DateTimeField(null=True, blank=True)
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


class Campaign(models.Model):
    class Purpose(models.TextChoices):
        COLLECT = "collect", "Collect (two samples of one version)"
        EVALUATE = "evaluate", "Evaluate (version against version)"
        # The one campaign that holds the playground's pairs (ratings.playground): each pair is
        # made for one visitor's prompt and leased to that visitor only.
        PLAYGROUND = "playground", "Playground (pairs made for visitors' own prompts)"

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
    rater_title = models.CharField(
        max_length=200,
        blank=True,
        help_text="The title raters see. Empty: one that names the task only. The name is for"
        " admins, and may name the versions, so raters never see it.",
    )
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
    prompts = models.ManyToManyField("generation.Prompt", related_name="campaigns")
    votes_per_item = models.PositiveSmallIntegerField(default=3)
    min_listen_seconds = models.FloatField(default=5.0)
    listen_to_end = models.BooleanField(
        default=False, help_text="Require every clip to be heard to its end."
    )
    clip_seconds = models.FloatField(default=10.0)

    class QualityPolicy(models.TextChoices):
        NONE = "none", "None: checks are recorded, nothing is rejected"
        P808 = "p808", "ITU-T P.808: reject sessions that fail two or more checks"

    class PairSelection(models.TextChoices):
        UNIFORM = "uniform", "Uniform: fewest votes first"
        ACTIVE = "active", "Active: most uncertain outcome first"
        UNDERSAMPLED = "undersampled", "Under-sampled versions first (weight 1/(votes+c))"

    # Recruitment (Prolific, MTurk, self-registration).
    consent_text = models.TextField(blank=True)
    crowd_study_ids = models.JSONField(
        default=list,
        blank=True,
        help_text="The Prolific study ids (STUDY_ID) or MTurk HIT ids (hitId) whose links may"
        " enter; empty: any study's.",
    )
    completion_code = models.CharField(max_length=64, blank=True)
    completion_url = models.URLField(
        blank=True, help_text="Where a finished crowd session is sent; {code} is replaced."
    )
    votes_per_session = models.PositiveIntegerField(
        null=True, blank=True, help_text="Items in one crowd session before its completion code."
    )
    max_votes_per_rater = models.PositiveIntegerField(null=True, blank=True)
    # Qualification (a P.808-style listening check before real pairs are served).
    qualification_required = models.BooleanField(default=False)
    qualification_valid_hours = models.FloatField(default=24.0)
    # Gold and trap items, silently mixed in at this rate (0.1: about one item in ten).
    check_rate = models.FloatField(default=0.0)
    quality_policy = models.CharField(
        max_length=8, choices=QualityPolicy.choices, default=QualityPolicy.NONE
    )
    pair_selection = models.CharField(
        max_length=16, choices=PairSelection.choices, default=PairSelection.UNIFORM
    )
    # Collect campaigns that teach: this share of the pairs set a clip against a variant of
    # it that differs along one of these audible axes (generation.music.variants), so votes
    # say which axes raters care about. Raters see a pair like any other.
    variant_axes = models.JSONField(default=list, blank=True)
    variant_share = models.FloatField(default=0.5)
    generation_total = models.PositiveIntegerField(default=0)
    generation_done = models.PositiveIntegerField(default=0)
    generation_error = models.TextField(blank=True)
    # When a prompt last finished or the campaign was last queued (ratings.campaigns).
    generation_heartbeat_at = models.DateTimeField(null=True, blank=True)
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
                condition=Q(check_rate__gte=0, check_rate__lte=0.5),
                name="campaign_check_rate_range",
            ),
            models.CheckConstraint(
                condition=Q(qualification_valid_hours__gt=0),
                name="campaign_qualification_hours_positive",
            ),
            models.CheckConstraint(
                condition=Q(purpose="collect", version_b__isnull=True)
                | Q(purpose="evaluate", version_b__isnull=False)
                | Q(purpose="playground"),
                name="campaign_versions_match_purpose",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    TASK_TITLES = {
        Protocol.PREFERENCE: "Which clip do you prefer?",
        Protocol.SIDE_BY_SIDE: "Rate two clips side by side",
        Protocol.MOS: "Rate the sound of each clip",
    }

    @property
    def title_for_raters(self) -> str:
        """What rater-facing pages call the campaign: never its name, which an admin or the
        closed loop may have written with the versions in it ("Evaluation: v2 vs v1")."""
        return self.rater_title or self.TASK_TITLES.get(self.protocol, "Listening task")

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
    prompt = models.ForeignKey("generation.Prompt", on_delete=models.PROTECT, related_name="+")
    track_a = models.ForeignKey("generation.Track", on_delete=models.PROTECT, related_name="+")
    track_b = models.ForeignKey(
        "generation.Track", on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )

    class Kind(models.TextChoices):
        REGULAR = "regular"
        GOLD = "gold", "Gold: an obviously better and worse clip"
        TRAP = "trap", "Trap: a clip that tells the listener which answer to give"
        QUALIFICATION = "qualification", "Qualification: a listening check before real pairs"

    # Only regular pairs are rating items; the others are checks with a known answer, never
    # counted in statistics, exports or training.
    kind = models.CharField(
        max_length=16, choices=Kind.choices, default=Kind.REGULAR, db_default=Kind.REGULAR
    )
    expected_choice = models.CharField(
        max_length=1,
        choices=[("a", "Track A"), ("b", "Track B")],
        blank=True,
        default="",
        db_default="",
        help_text="The known answer of a check pair: the track a careful listener prefers.",
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
            models.CheckConstraint(
                condition=Q(kind="regular", expected_choice="")
                | (~Q(kind="regular") & Q(expected_choice__in=["a", "b"])),
                name="pair_check_has_answer",
            ),
        ]
        indexes = [
            # Partial: the lease query asks for regular pairs only, and a full index would
            # no longer match it (one benchmark run fell from 119 to 43 leases+votes a second
            # when PostgreSQL chose a sort over every pair of the campaign instead).
            models.Index(
                fields=["campaign", "slots_taken", "id"],
                condition=Q(kind="regular"),
                name="pair_lease_order_regular",
            ),
        ]

    def __str__(self) -> str:
        return f"pair {self.pk} of campaign {self.campaign_id}"


class AssignmentQuerySet(models.QuerySet):
    def live(self, now: datetime) -> AssignmentQuerySet:
        return self.filter(status=Assignment.Status.LIVE, expires_at__gt=now)

    def overdue(self, now: datetime) -> AssignmentQuerySet:
        return self.filter(status=Assignment.Status.LIVE, expires_at__lte=now)

    def close(self, *, batch: int | None = None) -> int:
        """Close these leases, live ones only, and give their slots back to their pairs, in
        one transaction; a vote on a closed lease is refused as expired. Rows another
        request holds locked (voting on them right now) are skipped. Returns how many
        closed."""
        with transaction.atomic():
            live = self.filter(status=Assignment.Status.LIVE).select_for_update(skip_locked=True)
            rows = list(live.values_list("id", "pair_id")[:batch])
            if not rows:
                return 0
            Assignment.objects.filter(id__in=[row[0] for row in rows]).update(
                status=Assignment.Status.EXPIRED
            )
            for pair_id, count in sorted(Counter(row[1] for row in rows).items()):
                Pair.objects.filter(pk=pair_id).update(slots_taken=F("slots_taken") - count)
        return len(rows)


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


def counted_votes(vote_path: str = "") -> Q:
    """The condition of a counted vote (`VoteQuerySet.counted`), for a query that reaches the
    vote through `vote_path` (e.g. "vote__" from a rating): a join, where a subquery over
    every vote would cost a pass of its own."""
    return Q(
        **{f"{vote_path}status": Vote.Status.COUNTED, f"{vote_path}pair__kind": Pair.Kind.REGULAR}
    )


class VoteQuerySet(models.QuerySet):
    def counted(self) -> VoteQuerySet:
        """The votes statistics, leaderboards, exports and training count by default: on real
        rating items (not gold, trap or qualification checks), neither flagged nor rejected."""
        return self.filter(counted_votes())


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

    class Status(models.TextChoices):
        COUNTED = "counted"
        FLAGGED = "flagged", "Flagged: kept, not counted until an admin clears it"
        REJECTED = "rejected", "Rejected: kept, never counted"

    class Verification(models.TextChoices):
        VERIFIED = "verified"
        # A check that could not run (its service was down) is never recorded as failed.
        UNVERIFIED = "unverified"

    # The database defaults keep the hand-written INSERTs of the vote hot path (and bulk
    # loaders) valid without naming these columns.
    status = models.CharField(
        max_length=8, choices=Status.choices, default=Status.COUNTED, db_default=Status.COUNTED
    )
    # Why a vote was flagged or rejected: ["too_fast", "burst", "shared_ip", "check_failed",
    # "session_rejected:<reason>", ...]; kept when an admin clears the vote.
    flags = models.JSONField(
        default=list, db_default=models.Value([], output_field=models.JSONField()), blank=True
    )
    verification = models.CharField(
        max_length=10,
        choices=Verification.choices,
        default=Verification.VERIFIED,
        db_default=Verification.VERIFIED,
    )
    check_passed = models.BooleanField(
        null=True, blank=True, help_text="For votes on check pairs: whether the answer was right."
    )
    session = models.ForeignKey(
        "RaterSession", null=True, blank=True, on_delete=models.PROTECT, related_name="votes"
    )
    ip_hash = models.CharField(
        max_length=64, blank=True, default="", db_default="", help_text="Salted hash, never the IP."
    )
    comment = models.TextField(
        max_length=2000, blank=True, default="", db_default="", help_text="The rater's own words."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = VoteQuerySet.as_manager()

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
            models.Index(
                fields=["campaign", "status"], condition=~Q(status="counted"), name="vote_uncounted"
            ),
            models.Index(fields=["ip_hash", "created_at"], name="vote_by_ip_hash"),
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


class RaterSession(models.Model):
    """One sitting of one rater in one campaign: a Prolific submission, an MTurk assignment or
    a self-registered visit. Quality checks are judged per session (P.808), and a finished
    session shows the campaign's completion code."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        COMPLETED = "completed"
        REJECTED = "rejected"

    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="sessions")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="sessions")
    source = models.CharField(max_length=16, choices=Rater.Source.choices)
    # Prolific SESSION_ID / STUDY_ID, MTurk assignmentId / hitId; empty for local raters.
    external_session_id = models.CharField(max_length=100, blank=True)
    external_study_id = models.CharField(max_length=100, blank=True)
    submit_to = models.URLField(blank=True, help_text="MTurk's turkSubmitTo.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    failed_checks = models.PositiveSmallIntegerField(default=0)
    rejection_reasons = models.JSONField(default=list, blank=True)
    ip_hash = models.CharField(max_length=64, blank=True)
    consented_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "source", "external_session_id"],
                condition=~Q(external_session_id=""),
                name="session_unique_external_id",
            ),
        ]
        indexes = [models.Index(fields=["rater", "campaign", "status"], name="session_by_rater")]

    def __str__(self) -> str:
        return f"session {self.pk} of {self.rater_id} in {self.campaign_id} ({self.status})"


class Qualification(models.Model):
    """A rater's result in a campaign's listening check; real pairs are served only while a
    passed result has not expired."""

    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="qualifications")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="qualifications")
    passed = models.BooleanField()
    correct = models.PositiveSmallIntegerField()
    total = models.PositiveSmallIntegerField()
    taken_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["rater", "campaign", "expires_at"], name="qual_lookup")]

    def __str__(self) -> str:
        return f"{'passed' if self.passed else 'failed'} {self.correct}/{self.total}"


class Leaderboard(models.Model):
    """Bradley-Terry strengths of the versions in one campaign, computed by a periodic job
    (never inside a rater's request) and served as stored."""

    campaign = models.OneToOneField(Campaign, on_delete=models.CASCADE, related_name="leaderboard")
    computed_at = models.DateTimeField()
    vote_count = models.PositiveIntegerField(default=0)
    bootstrap_rounds = models.PositiveIntegerField(default=0)
    # One dict per listed version: version id and name, rating (Elo scale), 95% interval,
    # votes, wins, ties, losses, rank. Versions under the vote minimum are left out.
    rows = models.JSONField(default=list)
    settings = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"leaderboard of campaign {self.campaign_id}"


class PlaygroundRequest(models.Model):
    """One visitor's prompt in the playground and the pair generated for it. The pair (and its
    lease to this visitor) appears only once both clips exist: never half a pair."""

    class Mode(models.TextChoices):
        SAMPLES = "samples", "Two samples of the active version"
        ARENA = "arena", "Version against version (arena)"

    class Status(models.TextChoices):
        QUEUED = "queued"
        GENERATING = "generating"
        READY = "ready"
        FAILED = "failed"

    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="playground_requests")
    prompt = models.ForeignKey("generation.Prompt", on_delete=models.PROTECT, related_name="+")
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.SAMPLES)
    version_a = models.ForeignKey(
        "generation.GeneratorVersion", on_delete=models.PROTECT, related_name="+"
    )
    version_b = models.ForeignKey(
        "generation.GeneratorVersion", on_delete=models.PROTECT, related_name="+"
    )
    clip_seconds = models.FloatField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    clips_done = models.PositiveSmallIntegerField(default=0)
    pair = models.OneToOneField(
        Pair, null=True, blank=True, on_delete=models.SET_NULL, related_name="playground_request"
    )
    assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # Deduplication: one pending request per visitor and prompt.
            models.UniqueConstraint(
                fields=["rater", "prompt"],
                condition=Q(status__in=["queued", "generating"]),
                name="playground_one_pending_per_prompt",
            ),
            models.CheckConstraint(
                condition=Q(clip_seconds__gt=0, clip_seconds__lte=60),
                name="playground_clip_seconds_range",
            ),
        ]
        indexes = [
            models.Index(
                fields=["rater", "status"],
                condition=Q(status__in=["queued", "generating"]),
                name="playground_pending_by_rater",
            )
        ]

    def __str__(self) -> str:
        return f"playground request {self.pk} ({self.status})"


class PromptRejection(models.Model):
    """A prompt the playground's moderation refused: logged, never generated."""

    text = models.CharField(max_length=500, help_text="The prompt, cut to 500 characters.")
    reason = models.CharField(max_length=200)
    rater = models.ForeignKey(Rater, null=True, blank=True, on_delete=models.SET_NULL)
    ip_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"rejected: {self.reason}"


class DatasetSnapshot(models.Model):
    """A reproducible export of votes, ratings and tracks for researchers, built by a worker
    and kept in the snapshots storage under its own prefix (see ratings.snapshots)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"

    name = models.CharField(max_length=200, blank=True)
    filters = models.JSONField(default=dict, help_text="DataFilters.to_json()")
    formats = models.JSONField(default=list)
    include_audio = models.BooleanField(default=False)
    stable_rater_ids = models.BooleanField(default=False)
    # The HMAC key of the rater pseudonyms: whoever holds it can link pseudonyms to raters, so
    # it is never shown or written into the snapshot.
    pseudonym_salt = models.CharField(max_length=128, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    row_counts = models.JSONField(default=dict, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"dataset snapshot {self.pk} ({self.status})"

    @property
    def storage_prefix(self) -> str:
        """The folder of the snapshot's files in the snapshots storage (settings.STORAGES)."""
        return f"snapshot-{self.pk}"

    @property
    def directory(self) -> Path:
        """The snapshot's folder on this machine where the snapshots storage is a folder (the
        default, SNAPSHOT_DIR); an object store has none and raises NotImplementedError."""
        return Path(storages["snapshots"].path(self.storage_prefix))

    def files(self) -> list[str]:
        """Relative paths of the snapshot's files, manifest.json included; empty until built."""
        listed = sorted(self.manifest.get("files", {})) if self.manifest else []
        return [*listed, "manifest.json"] if listed else []
