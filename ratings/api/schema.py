"""The OpenAPI schema's shared parts: every operation documents the errors any endpoint can
answer with, in the one shape `ratings.api.errors.exception_handler` gives them, so a client
generated from the schema (or a fuzzer checking it) meets no undocumented status code."""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "description": "`error` is a machine-readable code; `detail` a readable message, or the"
    " problem per field under the fields' names.",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "detail": {}},
    "additionalProperties": True,
}

# Status code -> when any endpoint answers with it.
COMMON_ERRORS = {
    "400": "Malformed input; nothing was stored.",
    "401": "No credentials, or bad ones.",
    "403": "The caller's role may not do this.",
    "404": "No such object, or none the caller may see.",
    "413": "The request body is over the upload limit.",
    "429": "Rate limited: the Retry-After header says when to try again.",
    "503": "The database is unavailable for a moment: send the same request again.",
}


def add_error_responses(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """drf-spectacular post-processing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, description in COMMON_ERRORS.items():
                if code == "413" and "requestBody" not in operation:
                    continue  # only a body can be too large
                documented = responses.setdefault(code, {"description": description})
                documented.setdefault("content", content)
    return result
