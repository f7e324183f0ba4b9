"""Who may do what. A user's role is the one stored on their Rater row; superusers are admins
even without one, so `createsuperuser` is enough to run the platform."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from ratings.models import Rater, Role

ANONYMOUS = "anonymous"
_RANK = {ANONYMOUS: 0, Role.RATER: 1, Role.RESEARCHER: 2, Role.ADMIN: 3}


def role_of(user: AbstractBaseUser | AnonymousUser) -> str:
    if not user.is_authenticated:
        return ANONYMOUS
    if user.is_superuser:
        return Role.ADMIN
    try:
        return user.rater.role
    except Rater.DoesNotExist:
        return ANONYMOUS


def has_role(user: AbstractBaseUser | AnonymousUser, minimum: str) -> bool:
    """Roles are ordered: an admin may do what a researcher may, who may do what a rater may."""
    return _RANK[role_of(user)] >= _RANK[minimum]
