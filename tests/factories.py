import factory
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.utils import timezone

from generation.models import GeneratorVersion, Track
from ratings.models import Campaign, Pair, Prompt, Rater, Role

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


def served_seconds_ago(assignment, seconds: float) -> None:
    """Move an assignment's serving time into the past, as if the rater had been listening."""
    delta = timezone.timedelta(seconds=seconds)
    type(assignment).objects.filter(pk=assignment.pk).update(
        served_at=assignment.served_at - delta, expires_at=assignment.expires_at - delta
    )
    assignment.refresh_from_db()
