"""Fuzzing the API as an admin: no server error, every response as the schema documents it
(tests/ratings/api_fuzzing.py)."""

import pytest

from ratings.models import Role
from tests.ratings.api_fuzzing import FUZZ_SETTINGS, CallCounter, headers_for, load_schema

pytestmark = pytest.mark.django_db
schema = load_schema()
counter = CallCounter(schema, minimum=1000)


@pytest.fixture(scope="module", autouse=True)
def enough_requests():
    yield
    counter.check()


@pytest.fixture
def headers() -> dict[str, str]:
    return headers_for(Role.ADMIN)


@schema.parametrize()
@FUZZ_SETTINGS
def test_no_server_error_and_every_response_as_documented(case, headers, in_process_app):
    counter.call(case, headers)
