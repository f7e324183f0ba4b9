"""The security settings a deployment relies on: failed-login throttling, HTTPS redirects and
HSTS behind a proxy, the Content-Security-Policy with per-page nonces, and a clean
`check --deploy` under the production example environment."""

import re

import pytest

from tests.test_settings import ROOT, run_python

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("boss", password="right-horse-battery")


def attempt(client, password: str, url: str = LOGIN, ip: str = "203.0.113.9"):
    return client.post(url, {"username": "boss", "password": password}, REMOTE_ADDR=ip)


@pytest.mark.parametrize("url", [LOGIN, ADMIN_LOGIN])
def test_after_five_wrong_passwords_even_the_right_one_is_refused_with_429(
    client, admin_user, settings, url
):
    assert settings.AXES_FAILURE_LIMIT == 5
    statuses = [attempt(client, f"guess-{n}", url).status_code for n in range(4)]
    assert statuses == [200] * 4  # the form again, with its error

    assert attempt(client, "guess-4", url).status_code == 429
    assert attempt(client, "right-horse-battery", url).status_code == 429
    assert "_auth_user_id" not in client.session


def test_the_lockout_is_per_username_and_address_so_the_owner_still_gets_in(client, admin_user):
    for n in range(5):
        attempt(client, f"guess-{n}", ip="203.0.113.9")

    response = attempt(client, "right-horse-battery", ip="198.51.100.20")

    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(admin_user.pk)


def test_a_successful_login_clears_the_failures(client, admin_user):
    for n in range(4):
        attempt(client, f"guess-{n}")
    assert attempt(client, "right-horse-battery").status_code == 302
    client.logout()

    assert [attempt(client, f"again-{n}").status_code for n in range(4)] == [200] * 4


def test_plain_http_is_redirected_except_the_health_check_and_https_gets_hsts(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    plain = client.get(LOGIN)
    health = client.get("/healthz")
    behind_tls_proxy = client.get(LOGIN, HTTP_X_FORWARDED_PROTO="https")

    assert plain.status_code == 301 and plain["Location"].startswith("https://")
    assert health.status_code == 200
    assert behind_tls_proxy.status_code == 200
    assert behind_tls_proxy["Strict-Transport-Security"].startswith("max-age=31536000")


def test_inline_scripts_run_only_with_the_page_s_nonce(admin_client):
    from tests.factories import CampaignFactory

    campaign = CampaignFactory(status="generating")
    response = admin_client.get(f"/manage/campaigns/{campaign.pk}/")

    policy = response["Content-Security-Policy"]
    nonce = re.search(r"script-src 'self' 'nonce-([^']+)'", policy).group(1)
    assert (
        "object-src 'none'" in policy
        and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    )
    scripts = re.findall(r"<script( [^>]*)?>", response.content.decode())
    inline = [attributes for attributes in scripts if "src=" not in (attributes or "")]
    assert inline and all(f'nonce="{nonce}"' in attributes for attributes in inline)
    assert (
        nonce
        not in admin_client.get(f"/manage/campaigns/{campaign.pk}/")["Content-Security-Policy"]
    )


def example_environment(name: str, tmp_path) -> dict[str, str]:
    """An example environment file of platform/, its folders moved into tmp_path."""
    example = {}
    for line in (ROOT / "platform" / name).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    for key in ("DATA_DIR", "MEDIA_ROOT", "REWARD_DIR", "GENERATOR_DIR", "SNAPSHOT_DIR"):
        example[key] = str(tmp_path / key.lower())
    return example


def run_check(*options: str, environment: dict[str, str]):
    return run_python(
        "import sys; from django.core.management import execute_from_command_line; "
        f"execute_from_command_line(['manage.py', 'check', {', '.join(map(repr, options))}])",
        environment,
    )


@pytest.mark.parametrize("example", ["env.example", "env/web.env.example"])
def test_check_deploy_is_clean_under_the_production_example_environment(tmp_path, example):
    result = run_check(
        "--deploy", "--fail-level", "WARNING", environment=example_environment(example, tmp_path)
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_a_worker_host_starts_on_its_example_environment(tmp_path):
    # The worker serves no HTTP, so --deploy's checks (HSTS, cookies) are not its business.
    environment = example_environment("env/worker.env.example", tmp_path)

    result = run_check("--fail-level", "WARNING", environment=environment)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
