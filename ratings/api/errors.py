from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ratings.errors import RatingError


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """Domain errors become a 4xx with a machine-readable code and a readable message."""
    if isinstance(exc, RatingError):
        return Response({"error": exc.code, "detail": exc.message}, status=exc.status_code)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "error" not in response.data:
        response.data = {"error": getattr(exc, "default_code", "invalid"), **response.data}
    return response
