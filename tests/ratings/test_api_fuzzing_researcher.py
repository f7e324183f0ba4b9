"""Fuzzing the API as a researcher: no server error, every response as the schema documents it
(tests/ratings/api_fuzzing.py)."""

import pytest

from ratings.models import Role
from tests.ratings.api_fuzzing import in_process_app, role_fuzzing  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db
enough_requests, headers, test_no_server_error_and_every_response_as_documented = role_fuzzing(
    Role.RESEARCHER
)
