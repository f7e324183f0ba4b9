"""Campaigns: creating them (`campaign_create`, `campaign_votes_extend`), and their
generation: making each prompt's clips, forming its rating items, counting
progress from what exists, activating the campaign when every item is there, and re-queueing
what a dead worker left undone.

Generation runs one task per prompt, or per GENERATION_PROMPTS_PER_TASK prompts when the
versions sample in batches (`ratings.tasks.generate_campaign_prompts`, on the generate
queue). Every step is idempotent (tracks are keyed by prompt, version and seed,
items by their first track), so a prompt may be run any number of times; that is what makes
re-queueing safe. A campaign's heartbeat (`generation_heartbeat_at`) moves whenever a prompt
finishes or the campaign is queued; a generating campaign whose heartbeat is older than
GENERATION_STALE_SECONDS has lost its messages or its worker and is queued again.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from generation.models import GeneratorVersion, Prompt, Track
from generation.music.backends import BATCHING_BACKENDS
from generation.services import derive_seed, prompt_get_or_create, track_variant, tracks_generate
from ratings.errors import InvalidVote
from ratings.models import Campaign, Pair

VARIANT_BACKENDS = ("procedural", "symbolic")  # the backends whose clips carry their notes


def campaign_generate_prompt(*, campaign_id: int, prompt_id: int) -> None:
    """Make the clips of one prompt and form its rating items. Safe to run twice."""
    campaign_generate_prompts(campaign_id=campaign_id, prompt_ids=[prompt_id])


def campaign_generate_prompts(*, campaign_id: int, prompt_ids: Sequence[int]) -> None:
    """Make the clips of several prompts and form their rating items. Each version's sampled
    clips are made together (`tracks_generate`: the learned backend samples them in batches,
    several times faster than one by one, and each is the clip it would make alone); then,
    prompt by prompt, a collect pair's variant of its first clip and the items. Safe to run
    twice."""
    campaign = Campaign.objects.select_related("version_a", "version_b").get(pk=campaign_id)
    prompts = list(Prompt.objects.filter(pk__in=prompt_ids).order_by("pk"))
    axes = {prompt.pk: variant_axis_for(campaign, prompt) for prompt in prompts}
    # The sampled clips, by version: every side but a variant's, which is made from side a.
    wanted: dict[int, list[tuple[Prompt, str]]] = {}
    versions: dict[int, GeneratorVersion] = {}
    for prompt in prompts:
        for side, version in _versions_per_side(campaign):
            if side == "a" or axes[prompt.pk] is None:
                wanted.setdefault(version.pk, []).append((prompt, side))
                versions[version.pk] = version
    sampled: dict[tuple[int, str], Track] = {}
    for version_id, clips in wanted.items():
        made = tracks_generate(
            version=versions[version_id],
            requests=[(prompt, _clip_seed(campaign, prompt, side)) for prompt, side in clips],
            duration_seconds=campaign.clip_seconds,
        )
        for (prompt, side), (track, _) in zip(clips, made, strict=True):
            sampled[prompt.pk, side] = track
    for prompt in prompts:
        first = sampled[prompt.pk, "a"]
        if (axis := axes[prompt.pk]) is not None:
            seed = derive_seed(_clip_seed(campaign, prompt, "b"), "variant", axis)
            second, _ = track_variant(
                track=first, axis=axis, seed=seed, duration_seconds=campaign.clip_seconds
            )
        else:
            second = sampled[prompt.pk, "b"]
        with transaction.atomic():
            # The campaign's row lock orders the prompts that finish at the same moment: each
            # counts the items of all that finished before it. Without it two last prompts
            # could each miss the other's uncommitted items, and the campaign would never
            # activate.
            Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
            _form_items(campaign, prompt, [first, second])
            _progress_store(campaign)


def _clip_seed(campaign: Campaign, prompt: Prompt, side: str) -> int:
    return derive_seed(campaign.pk, prompt.pk, side)


def variant_axis_for(campaign: Campaign, prompt: Prompt) -> str | None:
    """The axis along which this prompt's second clip varies the first, or None for two
    samples: a variant_share of a collect campaign's prompts, fixed per (campaign, prompt)."""
    if not campaign.variant_axes or campaign.purpose != Campaign.Purpose.COLLECT:
        return None
    rng = random.Random(derive_seed(campaign.pk, prompt.pk, "variant"))
    if rng.random() >= campaign.variant_share:
        return None
    return rng.choice(campaign.variant_axes)


def _versions_per_side(campaign: Campaign) -> list[tuple[str, GeneratorVersion]]:
    if campaign.purpose == Campaign.Purpose.EVALUATE:
        return [("a", campaign.version_a), ("b", campaign.version_b)]
    # collect: two different samples (different seeds) of the same version
    return [("a", campaign.version_a), ("b", campaign.version_a)]


def _items_per_prompt(campaign: Campaign) -> int:
    return 2 if campaign.protocol == Campaign.Protocol.MOS else 1


def _form_items(campaign: Campaign, prompt: Prompt, tracks: list[Track]) -> None:
    if campaign.protocol == Campaign.Protocol.MOS:
        items = [(track, None) for track in tracks]
    else:
        items = [(tracks[0], tracks[1])]
    for track_a, track_b in items:
        Pair.objects.get_or_create(
            campaign=campaign,
            track_a=track_a,
            defaults={
                "prompt": prompt,
                "track_b": track_b,
                "votes_wanted": campaign.votes_per_item,
            },
        )


def _progress_store(campaign: Campaign) -> None:
    """Count the clips that exist in the campaign's items (not what one attempt made: a
    retried prompt whose first clip a dead worker had made would count one short), move the
    heartbeat, and activate the campaign once every item is there."""
    counts = Pair.objects.filter(campaign=campaign).aggregate(
        items=Count("pk"), clips=Count("track_a") + Count("track_b")
    )
    Campaign.objects.filter(pk=campaign.pk).update(
        generation_done=counts["clips"], generation_heartbeat_at=timezone.now()
    )
    if counts["items"] >= campaign.prompts.count() * _items_per_prompt(campaign):
        # Conditional: a paused or finished campaign is not reopened by a late retry.
        Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.GENERATING).update(
            status=Campaign.Status.ACTIVE
        )


def campaign_record_generation_failure(*, campaign_id: int, error: str) -> None:
    Campaign.objects.filter(pk=campaign_id).update(
        status=Campaign.Status.FAILED, generation_error=error[:2000]
    )


def prompts_without_items(campaign: Campaign) -> list[int]:
    """Ids of the campaign's prompts whose rating items are not all formed yet."""
    complete = (
        Pair.objects.filter(campaign=campaign)
        .values("prompt_id")
        .annotate(items=Count("pk"))
        .filter(items__gte=_items_per_prompt(campaign))
        .values_list("prompt_id", flat=True)
    )
    return sorted(campaign.prompts.exclude(pk__in=complete).values_list("pk", flat=True))


def campaign_generation_queue(campaign: Campaign) -> list[int]:
    """Queue (once the caller's transaction commits) a generation task for each prompt that
    has no complete items yet, and move the heartbeat. Returns the prompts queued."""
    from ratings import tasks  # the task module imports this one

    prompt_ids = prompts_without_items(campaign)
    Campaign.objects.filter(pk=campaign.pk).update(generation_heartbeat_at=timezone.now())
    if not prompt_ids:  # every item exists; only the activation was lost
        _progress_store(campaign)
    per_task = _prompts_per_task(campaign)
    for start in range(0, len(prompt_ids), per_task):
        tasks.generate_campaign_prompts.delay_on_commit(
            campaign.pk, prompt_ids[start : start + per_task]
        )
    return prompt_ids


def _prompts_per_task(campaign: Campaign) -> int:
    versions = [campaign.version_a, campaign.version_b]
    if all(v.backend in BATCHING_BACKENDS for v in versions if v is not None):
        return settings.GENERATION_PROMPTS_PER_TASK
    return 1


def campaigns_requeue_stalled(*, stale_seconds: float | None = None) -> dict[int, list[int]]:
    """Queue again what generating campaigns with a heartbeat older than `stale_seconds`
    (default GENERATION_STALE_SECONDS) still lack: their tasks were lost with a killed worker
    (a redelivery of an unacknowledged message waits for the broker's visibility timeout, an
    hour on Redis, and never comes on the filesystem broker). A campaign waiting behind a
    long queue is re-sent at most once per stale interval, and the duplicates cost nothing:
    a prompt that is done is done. Returns {campaign: prompts queued}."""
    if stale_seconds is None:
        stale_seconds = settings.GENERATION_STALE_SECONDS
    stale_before = timezone.now() - timedelta(seconds=stale_seconds)
    queued: dict[int, list[int]] = {}
    with transaction.atomic():
        stalled = Campaign.objects.select_for_update(skip_locked=True).filter(
            status=Campaign.Status.GENERATING, generation_heartbeat_at__lt=stale_before
        )
        for campaign in stalled:
            queued[campaign.pk] = campaign_generation_queue(campaign)
    return queued


def campaigns_requeue(campaigns) -> int:
    """An admin's re-queue: generating or failed campaigns are set generating again, their
    error cleared, and what they lack is queued. Returns how many campaigns were queued."""
    with transaction.atomic():
        chosen = campaigns.select_for_update().filter(
            status__in=[Campaign.Status.GENERATING, Campaign.Status.FAILED]
        )
        for campaign in chosen:
            Campaign.objects.filter(pk=campaign.pk).update(
                status=Campaign.Status.GENERATING, generation_error=""
            )
            campaign_generation_queue(campaign)
        return len(chosen)


def campaign_create(
    *,
    name: str,
    purpose: str,
    protocol: str,
    prompt_texts: list[str],
    version_a: GeneratorVersion,
    version_b: GeneratorVersion | None = None,
    votes_per_item: int = 3,
    min_listen_seconds: float = 5.0,
    listen_to_end: bool = False,
    clip_seconds: float | None = None,
    instructions: str = "",
    created_by: AbstractBaseUser | None = None,
    queue: bool = True,
    qualification_required: bool = False,
    qualification_valid_hours: float = 24.0,
    check_rate: float = 0.0,
    quality_policy: str = Campaign.QualityPolicy.NONE,
    pair_selection: str = Campaign.PairSelection.UNIFORM,
    consent_text: str = "",
    completion_code: str = "",
    completion_url: str = "",
    votes_per_session: int | None = None,
    max_votes_per_rater: int | None = None,
    variant_axes: list[str] | tuple[str, ...] = (),
    variant_share: float = 0.5,
    rater_title: str = "",
    crowd_study_ids: list[str] | tuple[str, ...] = (),
) -> Campaign:
    """Create a campaign and queue the generation of its tracks and pairs (queue=False: the
    caller runs ratings.campaigns.campaign_generate_prompt for each prompt itself).
    The quality and recruitment settings are the ones CampaignForm.campaign_settings()
    returns."""
    from ratings.campaigns import campaign_generation_queue

    texts = [text.strip() for text in prompt_texts if text.strip()]
    if not texts:
        raise InvalidVote("A campaign needs at least one prompt.")
    variant_axes = list(dict.fromkeys(variant_axes))
    if variant_axes:
        variants_check(purpose, protocol, version_a, variant_axes, variant_share)
    with transaction.atomic():
        campaign = Campaign.objects.create(
            name=name,
            rater_title=rater_title,
            crowd_study_ids=list(crowd_study_ids),
            purpose=purpose,
            protocol=protocol,
            version_a=version_a,
            version_b=version_b,
            votes_per_item=votes_per_item,
            min_listen_seconds=min_listen_seconds,
            listen_to_end=listen_to_end,
            clip_seconds=clip_seconds or settings.GENERATION_DEFAULT_CLIP_SECONDS,
            instructions=instructions,
            created_by=created_by,
            generation_total=2 * len(texts),
            qualification_required=qualification_required,
            qualification_valid_hours=qualification_valid_hours,
            check_rate=check_rate,
            quality_policy=quality_policy,
            pair_selection=pair_selection,
            consent_text=consent_text,
            completion_code=completion_code,
            completion_url=completion_url,
            votes_per_session=votes_per_session,
            max_votes_per_rater=max_votes_per_rater,
            variant_axes=variant_axes,
            variant_share=variant_share,
        )
        prompts = [prompt_get_or_create(text=text) for text in texts]
        campaign.prompts.set(prompts)
        if queue:
            campaign_generation_queue(campaign)
    return campaign


def campaign_votes_extend(*, campaign: Campaign, extra_per_item: int) -> Campaign:
    """Ask for `extra_per_item` more votes on every item of the campaign: for a listening
    test that has not yet gathered enough decisive votes to tell its versions apart."""
    if extra_per_item < 1:
        raise InvalidVote("Ask for at least one more vote per item.")
    if campaign.votes_per_item + extra_per_item > 1000:
        raise InvalidVote("A campaign takes at most 1000 votes per item.")
    with transaction.atomic():
        Campaign.objects.filter(pk=campaign.pk).update(
            votes_per_item=F("votes_per_item") + extra_per_item
        )
        Pair.objects.filter(campaign=campaign).update(
            votes_wanted=F("votes_wanted") + extra_per_item
        )
    campaign.refresh_from_db()
    return campaign


def variants_check(
    purpose: str,
    protocol: str,
    version: GeneratorVersion,
    axes: list[str],
    share: float,
) -> None:
    """Raises InvalidVote unless a campaign so set up can pair clips with their variants."""
    from generation.music.variants import VARIANT_AXES

    unknown = [axis for axis in axes if axis not in VARIANT_AXES]
    if unknown:
        raise InvalidVote(
            f"Unknown variant axes: {', '.join(unknown)} (choose from {', '.join(VARIANT_AXES)})."
        )
    if purpose != Campaign.Purpose.COLLECT or protocol != Campaign.Protocol.PREFERENCE:
        raise InvalidVote("Variants are for collect campaigns with side-by-side preference.")
    if version.backend not in VARIANT_BACKENDS:
        raise InvalidVote(
            f"Variants change a clip's notes: {version} ({version.backend}) makes audio only."
        )
    if not 0 < share <= 1:
        raise InvalidVote("The share of variant pairs must lie in (0, 1].")
