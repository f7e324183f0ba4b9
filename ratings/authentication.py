from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token


class RaterTokenAuthentication(TokenAuthentication):
    """Token auth that loads the user's Rater row in the same query: the vote hot path
    needs it on every request."""

    def authenticate_credentials(self, key: str):
        try:
            token = Token.objects.select_related("user__rater").get(key=key)
        except Token.DoesNotExist:
            return super().authenticate_credentials(key)  # raises the standard 401
        if not token.user.is_active:
            return super().authenticate_credentials(key)
        return token.user, token
