"""Domain errors of the rating loop. Each carries the HTTP status the API answers with and a
message written for the person (or script) that sent the request."""


class RatingError(Exception):
    status_code = 400
    code = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidVote(RatingError):
    code = "invalid_vote"


class ListeningTooShort(RatingError):
    status_code = 422
    code = "listening_too_short"


class AssignmentNotFound(RatingError):
    status_code = 404
    code = "assignment_not_found"


class LeaseExpired(RatingError):
    status_code = 409
    code = "lease_expired"


class AlreadyVoted(RatingError):
    status_code = 409
    code = "already_voted"


class CampaignNotOpen(RatingError):
    status_code = 409
    code = "campaign_not_open"
