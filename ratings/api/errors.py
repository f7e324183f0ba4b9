from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ratings.errors import RatingError


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """Domain errors become a 4xx with a machine-readable code and a readable message."""
    if isinstance(exc, RatingError):
        return Response({"error": exc.code, "detail": exc.message}, status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        # Django would answer with its HTML 400 page; API clients get JSON, and the status
        # that says the body, not its content, was refused.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"error": "too_large", "detail": f"The request body is over {limit} bytes."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is down or restarting (or a deadlock was broken): the request may be
        # sent again as it was. A vote that was stored before the failure is answered with
        # the original on the resend, through its idempotency key.
        return Response(
            {"error": "unavailable", "detail": "The database is unavailable; try again."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "2"},
        )
    # As DRF's own handler does, so that the code below names them (not "invalid").
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "error" not in response.data:
        response.data = {"error": getattr(exc, "default_code", "invalid"), **response.data}
    return response
