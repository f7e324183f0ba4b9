from rest_framework.permissions import BasePermission

from ratings.models import Role
from ratings.roles import has_role


class _HasRole(BasePermission):
    minimum_role = Role.ADMIN
    message = "Your role does not allow this."

    def has_permission(self, request, view) -> bool:
        return has_role(request.user, self.minimum_role)


class IsRater(_HasRole):
    minimum_role = Role.RATER


class IsResearcher(_HasRole):
    minimum_role = Role.RESEARCHER


class IsAdmin(_HasRole):
    minimum_role = Role.ADMIN
