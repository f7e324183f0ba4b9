import pytest
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from ratings.models import Role
from tests.factories import RaterFactory


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.GENERATOR_DIR = tmp_path / "generators"
    settings.REWARD_DIR = tmp_path / "rewards"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's million rounds cost half a second per account on this machine, and the
    # factories make an account per rater. Hashes made under the default hashers still check.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        *settings.PASSWORD_HASHERS,
    ]


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Rate-limit counters live in the cache; one test's votes must not throttle the next's.
    cache.clear()


@pytest.fixture(autouse=True)
def _static_without_manifest(settings):
    # The manifest exists only after collectstatic, which production runs at deploy time.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def make_rater(db):
    def make(role: str = Role.RATER, **kwargs):
        return RaterFactory(role=role, **kwargs)

    return make


@pytest.fixture
def site_admin_client(client, make_rater):
    """A client logged in as a platform admin who may also use Django's admin site."""
    rater = make_rater(role=Role.ADMIN)
    rater.user.is_staff = rater.user.is_superuser = True
    rater.user.save()
    client.force_login(rater.user)
    return client


@pytest.fixture
def api_client_for():
    """An API client authenticated with the rater's token, as scripts and SDKs call it."""

    def make(rater) -> APIClient:
        client = APIClient()
        token, _ = Token.objects.get_or_create(user=rater.user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make


# The slowest files, slowest first (from the durations `platform/test.sh` prints). They run
# first: with `--dist loadfile` a worker takes whole files in collection order, and when the
# long files came last (reward/ sorts late) one worker ran them alone while the other sat idle.
SLOW_FILES_FIRST = (
    "tests/reward/test_preference_model.py",
    "tests/generation_music/test_pretrain.py",
    "tests/reward/test_closed_loop.py",
    "tests/reward/test_finetune_worker.py",
    "tests/reward/test_finetune.py",
    "tests/reward/test_reward_worker.py",
    "tests/generation/test_generation_worker.py",
    "tests/reward/test_measured_model.py",
    "tests/reward/test_quality_model.py",
    "tests/reward_learning/test_rl.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: index for index, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable
