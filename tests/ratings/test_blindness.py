"""The blindness audit: in a two-version campaign, nothing a rater's browser receives tells
the versions apart. Pages, the lease JSON, the clip URLs, the clips' response headers, their
audio format and length, and the bytes of the files are compared between the two sides of
real generated pairs (one clip per version, rendered by the campaign's generation)."""

import io
import json

import pytest
import soundfile

from ratings.campaigns import campaign_create, campaign_generate_prompt
from ratings.models import Assignment, Campaign
from tests.factories import GeneratorVersionFactory, RaterFactory

pytestmark = pytest.mark.django_db

CANDIDATE, PARENT = "candidate-omega-9", "parent-alpha-7"
PROMPTS = ["sad jazz trio at 70 bpm", "fast techno with drums"]


@pytest.fixture
def campaign() -> Campaign:
    campaign = campaign_create(
        name=f"Evaluation: {CANDIDATE} vs {PARENT}", purpose="evaluate", protocol="preference",
        prompt_texts=PROMPTS, clip_seconds=3.0, queue=False,
        version_a=GeneratorVersionFactory(name=CANDIDATE, config={"variation": 0.9}),
        version_b=GeneratorVersionFactory(name=PARENT, config={"humanize": 0.1}),
    )  # fmt: skip
    for prompt in campaign.prompts.all():
        campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=prompt.pk)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.ACTIVE
    return campaign


def secrets_of(campaign: Campaign) -> list[str]:
    """What would unblind a rater: the versions' names and ids, and the campaign's name."""
    return [CANDIDATE, PARENT, campaign.name, "version", "candidate", "parent"]


def test_nothing_a_rater_receives_tells_the_versions_apart(campaign, api_client_for):
    rater = RaterFactory()
    client = api_client_for(rater)
    client.force_login(rater.user)  # the pages take the browser's session
    pages = [client.get(url) for url in ("/", f"/rate/{campaign.pk}/")]
    clips_by_version: dict[str, list] = {CANDIDATE: [], PARENT: []}
    leases = []
    for _ in PROMPTS:
        response = client.get("/api/v1/assignments/next/", {"campaign": campaign.pk})
        lease = response.json()
        leases.append(response)
        assignment = Assignment.objects.select_related("pair__track_a__generator_version").get(
            pk=lease["assignment"]
        )
        # Which shown slot holds which version is the server's secret.
        a_slot = "A" if assignment.left_is_a else "B"
        for clip in lease["clips"]:
            version = CANDIDATE if clip["slot"] == a_slot else PARENT
            if assignment.pair.track_a.generator_version.name != CANDIDATE:
                version = PARENT if version == CANDIDATE else CANDIDATE
            clips_by_version[version].append((clip, client.get(clip["url"])))
        Assignment.objects.filter(pk=assignment.pk).update(status=Assignment.Status.EXPIRED)

    for response in [*pages, *leases]:
        assert response.status_code == 200
        text = response.content.decode().lower()
        assert not [secret for secret in secrets_of(campaign) if secret.lower() in text]
    for lease in leases:
        clips = lease.json()["clips"]
        assert [set(clip) for clip in clips] == [
            {"slot", "url", "duration_ms", "required_listen_ms"}
        ] * 2
        assert clips[0]["duration_ms"] == clips[1]["duration_ms"]
        assert clips[0]["required_listen_ms"] == clips[1]["required_listen_ms"]

    def audit(clip, response) -> tuple:
        body = b"".join(response.streaming_content)
        headers = {name: value for name, value in response.items() if name != "Content-Length"}
        info = soundfile.info(io.BytesIO(body))
        assert int(response["Content-Length"]) == len(body)
        assert not [s for s in secrets_of(campaign) if s.encode() in body]
        return (json.dumps(headers, sort_keys=True), info.format, info.subtype,
                info.samplerate, info.channels, info.frames, clip["duration_ms"])  # fmt: skip

    candidate = {audit(*item) for item in clips_by_version[CANDIDATE]}
    parent = {audit(*item) for item in clips_by_version[PARENT]}
    assert len(clips_by_version[CANDIDATE]) == len(clips_by_version[PARENT]) == len(PROMPTS)
    assert candidate == parent and len(candidate) == 1  # one shape of response for every clip
