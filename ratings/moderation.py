"""The playground's prompt moderation: length limits, a whole-word blocklist and an optional
hook (settings.PLAYGROUND_MODERATION_HOOK), failing closed. A refused prompt is logged in
PromptRejection and never reaches a generator."""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from django.conf import settings
from django.utils.module_loading import import_string

from ratings.errors import RatingError
from ratings.models import (
    PromptRejection,
    Rater,
)

logger = logging.getLogger(__name__)


class PromptRejected(RatingError):
    code = "prompt_rejected"


@lru_cache(maxsize=8)
def _blocklist_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    words = tuple(word for word in words if word)
    if not words:
        return None
    alternatives = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    # Whole words only: "ass" must not refuse "bass" or "classical".
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _rejection(text: str) -> tuple[str, str] | None:
    """(reason logged, message shown) for a prompt that may not be generated, else None."""
    shortest, longest = settings.PLAYGROUND_MIN_PROMPT_CHARS, settings.PLAYGROUND_MAX_PROMPT_CHARS
    if len(text) < shortest:
        return "too_short", f"Describe the music in at least {shortest} characters."
    if len(text) > longest:
        return "too_long", f"Keep the prompt to at most {longest} characters."
    pattern = _blocklist_pattern(tuple(settings.PLAYGROUND_BLOCKLIST))
    if pattern is not None and (match := pattern.search(text)):
        return f"blocklist:{match.group(0).lower()}", "This prompt contains a word we don't accept."
    if settings.PLAYGROUND_MODERATION_HOOK:
        try:
            reason = import_string(settings.PLAYGROUND_MODERATION_HOOK)(text)
        except Exception:
            # Fail closed: an unchecked prompt is never generated.
            logger.exception("The playground's moderation hook failed; the prompt is refused.")
            return "hook_failed", "This prompt could not be checked right now; try again later."
        if reason:
            return f"hook:{reason}", f"This prompt was not accepted: {reason}"
    return None


def prompt_moderate(*, text: str, rater: Rater | None, ip_hash: str = "") -> str:
    """The prompt as it will be stored (whitespace collapsed), or PromptRejected (400) after
    logging the refusal in PromptRejection; a refused prompt never reaches the generator."""
    cleaned = " ".join(text.split())
    rejection = _rejection(cleaned)
    if rejection is None:
        return cleaned
    reason, message = rejection
    PromptRejection.objects.create(
        text=(cleaned or text)[:500], reason=reason[:200], rater=rater, ip_hash=ip_hash
    )
    logger.info("playground prompt refused (%s) from rater %s", reason, rater and rater.pk)
    raise PromptRejected(message)
