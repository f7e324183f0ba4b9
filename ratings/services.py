"""Writes about raters that every rating page shares."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser

from ratings.models import Rater, Role


def rater_for_user(*, user: AbstractBaseUser) -> Rater:
    """The user's Rater row, created on first use (superusers made by createsuperuser)."""
    try:
        return user.rater  # usually already loaded by authentication or the role check
    except Rater.DoesNotExist:
        role = Role.ADMIN if user.is_superuser else Role.RATER
        rater, _ = Rater.objects.get_or_create(user=user, defaults={"role": role})
        return rater
