import uuid

import factory
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.db import models
from django.utils import timezone

from generation.models import GeneratorVersion, Prompt, Track
from ratings.models import Assignment, Campaign, MosRating, Pair, Rater, Role, Vote

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def save_password(self, create: bool, extracted, **kwargs) -> None:
        if create:
            self.save()


class RaterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Rater

    user = factory.SubFactory(UserFactory)
    role = Role.RATER


class GeneratorVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GeneratorVersion

    name = factory.Sequence(lambda n: f"procedural-test-{n}")
    backend = "procedural"
    status = GeneratorVersion.Status.ACTIVE


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    text = factory.Sequence(lambda n: f"calm piano piece number {n}")


class TrackFactory(factory.django.DjangoModelFactory):
    """A track row with placeholder bytes: for tests of the rating rules, which never decode
    audio. Tests that play or decode audio render real clips (see tests/rendering.py)."""

    class Meta:
        model = Track

    prompt = factory.SubFactory(PromptFactory)
    generator_version = factory.SubFactory(GeneratorVersionFactory)
    seed = factory.Sequence(lambda n: n)
    duration_seconds = 10.0
    sample_rate = 48000
    audio = factory.LazyFunction(lambda: ContentFile(b"OggS placeholder", name="clip.ogg"))


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    name = factory.Sequence(lambda n: f"campaign {n}")
    purpose = Campaign.Purpose.COLLECT
    protocol = Campaign.Protocol.PREFERENCE
    status = Campaign.Status.ACTIVE
    version_a = factory.SubFactory(GeneratorVersionFactory)
    votes_per_item = 3
    min_listen_seconds = 5.0
    clip_seconds = 10.0


class PairFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Pair

    campaign = factory.SubFactory(CampaignFactory)
    prompt = factory.SubFactory(PromptFactory)
    track_a = factory.SubFactory(
        TrackFactory,
        prompt=factory.SelfAttribute("..prompt"),
        generator_version=factory.SelfAttribute("..campaign.version_a"),
    )
    track_b = factory.SubFactory(
        TrackFactory,
        prompt=factory.SelfAttribute("..prompt"),
        generator_version=factory.SelfAttribute("..campaign.version_a"),
    )
    votes_wanted = factory.SelfAttribute("campaign.votes_per_item")


def vote_on(
    pair: Pair,
    rater: Rater,
    choice: str | None = None,
    *,
    scores: tuple[int, ...] | None = None,
    left_is_a: bool = True,
) -> Vote:
    """A finished vote (its assignment, the vote and any 1-5 ratings) written directly, for
    tests about what happens to stored votes; the rules of casting one are tested via the API."""
    now = timezone.now()
    assignment = Assignment.objects.create(
        pair=pair, rater=rater, campaign=pair.campaign, left_is_a=left_is_a,
        status=Assignment.Status.VOTED, served_at=now - timezone.timedelta(seconds=30),
        expires_at=now + timezone.timedelta(minutes=5),
    )  # fmt: skip
    vote = Vote.objects.create(
        assignment=assignment, pair=pair, rater=rater, campaign=pair.campaign, choice=choice,
        left_is_a=left_is_a, listen_ms_a=10_000, listen_ms_b=10_000 if pair.track_b_id else None,
        elapsed_ms=25_000, idempotency_key=uuid.uuid4(),
    )  # fmt: skip
    for track, score in zip((pair.track_a, pair.track_b), scores or (), strict=False):
        MosRating.objects.create(
            vote=vote, track=track, rater=rater, campaign=pair.campaign, score=score,
            listen_ms=10_000,
        )  # fmt: skip
    Pair.objects.filter(pk=pair.pk).update(
        vote_count=models.F("vote_count") + 1, slots_taken=models.F("slots_taken") + 1
    )
    return vote


def served_seconds_ago(assignment, seconds: float) -> None:
    """Move an assignment's serving time into the past, as if the rater had been listening."""
    delta = timezone.timedelta(seconds=seconds)
    type(assignment).objects.filter(pk=assignment.pk).update(
        served_at=assignment.served_at - delta, expires_at=assignment.expires_at - delta
    )
    assignment.refresh_from_db()
