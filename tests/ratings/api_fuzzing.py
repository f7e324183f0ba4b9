"""Schemathesis over the project's own OpenAPI schema, in-process through the WSGI app and the
test database: `role_fuzzing(role)` makes a module's fuzzing tests for one role (one file per
role, so the suite's two processes take one each).

What is checked: no server error, and every response is what the schema says (its status
code, content type, headers and body). What is not: that the server refuses every request
the schema would not allow and accepts every one it would (schemathesis' positive and
negative data checks). The API parses leniently where DRF does (an unparsable page_size
falls back to the default page, `false` is read as 0): those are not failures a client can
meet."""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ratings.models import Vote
from tests.factories import CampaignFactory, PairFactory, RaterFactory, vote_on

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Per operation and role; with the coverage phase's boundary cases, about 1,400 requests
# per role.
FUZZ_SETTINGS = hypothesis_settings(
    max_examples=5,
    deadline=None,
    derandomize=True,  # the same cases on every run: a red run is reproducible
    database=None,
    suppress_health_check=list(HealthCheck),
)


def load_schema() -> schemathesis.schemas.BaseSchema:
    # The schema as the server generates it, round-tripped through JSON as clients see it.
    raw = json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True)))
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = get_wsgi_application()
    return schema


@pytest.fixture
def in_process_app():
    """Django closes the database connection at the end of each request; in a test that
    would close the test's own transaction (Django's test client disconnects the same)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def headers_for(role: str) -> dict[str, str]:
    """A caller of `role`, and data for the list and detail endpoints to find."""
    campaign = CampaignFactory()
    raters = RaterFactory.create_batch(2)
    for pair in PairFactory.create_batch(2, campaign=campaign):
        for rater in raters:
            vote_on(pair, rater, Vote.Choice.A)
    token, _ = Token.objects.get_or_create(user=RaterFactory(role=role).user)
    return {"Authorization": f"Token {token.key}"}


class CallCounter:
    """The requests one module's fuzzing made. Once every operation's test has run, its
    teardown checks that they add up to a real fuzzing run, not a handful of cases."""

    def __init__(self, schema: schemathesis.schemas.BaseSchema, minimum: int) -> None:
        self.operations = {result.ok().label for result in schema.get_all_operations()}
        self.minimum = minimum
        self.seen: set[str] = set()
        self.calls = 0

    def call(self, case, headers: dict[str, str]) -> None:
        self.seen.add(case.operation.label)
        self.calls += 1
        case.call_and_validate(headers=headers, checks=CHECKS)

    def check(self) -> None:
        print(f"fuzzing: {self.calls} requests over {len(self.seen)} operations")
        if self.seen == self.operations:
            assert self.calls >= self.minimum, f"only {self.calls} fuzzed requests"


def role_fuzzing(role: str, minimum_requests: int = 1000):
    """The fixtures and the test of one role's fuzzing module, to be bound to module names
    (`enough_requests, headers, test_... = role_fuzzing(Role.ADMIN)`) where pytest finds
    them. The module-scoped check runs after every operation's test in the module."""
    schema = load_schema()
    counter = CallCounter(schema, minimum=minimum_requests)

    @pytest.fixture(scope="module", autouse=True)
    def enough_requests():
        yield
        counter.check()

    @pytest.fixture
    def headers() -> dict[str, str]:
        return headers_for(role)

    @schema.parametrize()
    @FUZZ_SETTINGS
    def test_no_server_error_and_every_response_as_documented(case, headers, in_process_app):
        counter.call(case, headers)

    return enough_requests, headers, test_no_server_error_and_every_response_as_documented
