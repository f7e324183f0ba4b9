"""The raw SQL of the ratings app, each statement with the reason it is not the ORM. All of
them are PostgreSQL's; the other databases take the ORM paths beside their callers. Statuses
and kinds are written in from the model enums, never repeated here.

The snapshots package renders its own statements from ORM queries (ratings/snapshots/sql.py).
"""

from ratings.models import Assignment, Pair, RaterSession

# Written into the statements as constants, not bound as parameters: psycopg prepares a
# statement run often, and PostgreSQL's generic plan for a prepared statement cannot see
# which status or kind a parameter holds. With them as parameters, vote_throughput at 16
# clients fell from 175 to 54 lease+vote cycles/s (PostgreSQL 1.7 -> 24 ms of CPU a cycle).
_CONSTANTS = {
    "regular": Pair.Kind.REGULAR.value,
    "live": Assignment.Status.LIVE.value,
    "voted": Assignment.Status.VOTED.value,
    "active": RaterSession.Status.ACTIVE.value,
}

# --- leasing.py: the next pair for a rater -----------------------------------------------

# One statement, one round trip: pick the pair, take a slot, record the lease, and return
# what the page needs. Its ORM equivalent costs five round trips and ~4 ms of SQL compiling
# per request, which is most of the lease time at arena load.
_LEASE = """
WITH candidate AS (
    SELECT p.id FROM ratings_pair p
    WHERE p.campaign_id = %(campaign)s AND p.slots_taken < p.votes_wanted
      AND p.kind = '{regular}'
      AND NOT EXISTS (
          SELECT 1 FROM ratings_assignment a WHERE a.pair_id = p.id AND a.rater_id = %(rater)s
      )
    ORDER BY p.slots_taken, p.id
    LIMIT 1
    FOR UPDATE OF p {lock_wait}
), taken AS (
    UPDATE ratings_pair SET slots_taken = ratings_pair.slots_taken + 1
    FROM candidate WHERE ratings_pair.id = candidate.id
    RETURNING ratings_pair.id, ratings_pair.prompt_id, ratings_pair.kind,
              ratings_pair.track_a_id, ratings_pair.track_b_id
), leased AS (
    INSERT INTO ratings_assignment
        (pair_id, rater_id, campaign_id, left_is_a, status, served_at, expires_at)
    SELECT taken.id, %(rater)s, %(campaign)s, %(left_is_a)s, '{live}', %(now)s, %(expires_at)s
    FROM taken
    RETURNING id
)
SELECT leased.id, %(left_is_a)s, %(expires_at)s, prompt.text, taken.kind,
       track_a.public_id, track_a.duration_seconds, track_b.public_id, track_b.duration_seconds
FROM leased, taken
JOIN ratings_prompt prompt ON prompt.id = taken.prompt_id
JOIN generation_track track_a ON track_a.id = taken.track_a_id
LEFT JOIN generation_track track_b ON track_b.id = taken.track_b_id
"""
# SKIP LOCKED first: a pair another rater is leasing this instant is passed over rather than
# waited for, so concurrent raters spread over pairs. If every open pair is locked (the last
# slots of a campaign), wait: PostgreSQL re-checks slots_taken once the lock is granted, so a
# filled pair is never handed out and nobody is told "nothing left" while slots remain.
LEASE_SKIP_LOCKED = _LEASE.format(lock_wait="SKIP LOCKED", **_CONSTANTS)
LEASE_WAIT = _LEASE.format(lock_wait="", **_CONSTANTS)


# --- voting.py: storing a vote --------------------------------------------------------------

# Claim, count, store and rate in one statement: one round trip instead of five (BEGIN, three
# writes, COMMIT) on the hot path. Data-modifying CTEs all run, and the later ones only act
# when `claimed` returned the lease.
_VOTE = """
WITH claimed AS (
    UPDATE ratings_assignment SET status = '{voted}'
    WHERE id = %(assignment)s AND status = '{live}' AND expires_at > %(now)s
    RETURNING id
), counted AS (
    UPDATE ratings_pair SET vote_count = vote_count + 1
    WHERE id = %(pair)s AND EXISTS (SELECT 1 FROM claimed)
), stored AS (
    INSERT INTO ratings_vote (assignment_id, pair_id, rater_id, campaign_id, choice, left_is_a,
                              listen_ms_a, listen_ms_b, elapsed_ms, idempotency_key, comment,
                              ip_hash, verification, session_id, created_at)
    SELECT claimed.id, %(pair)s::bigint, %(rater)s::bigint, %(campaign)s::bigint,
           %(choice)s::varchar, %(left_is_a)s::boolean, %(listen_ms_a)s::integer,
           %(listen_ms_b)s::integer, %(elapsed_ms)s::integer, %(idempotency_key)s::uuid,
           %(comment)s::text, %(ip_hash)s::varchar, %(verification)s::varchar,
           (SELECT s.id FROM ratings_ratersession s
            WHERE s.rater_id = %(rater)s AND s.campaign_id = %(campaign)s AND s.status = '{active}'
            ORDER BY s.started_at DESC, s.id DESC LIMIT 1),
           %(now)s::timestamptz
    FROM claimed
    RETURNING id, session_id
){ratings}
SELECT id, session_id FROM stored
"""
_RATINGS = """, rated AS (
    INSERT INTO ratings_mosrating (vote_id, track_id, rater_id, campaign_id, score, listen_ms,
                                   created_at)
    SELECT stored.id, clip.track_id, %(rater)s::bigint, %(campaign)s::bigint, clip.score,
           clip.listen_ms, %(now)s::timestamptz
    FROM stored, (VALUES {rows}) AS clip(track_id, score, listen_ms)
)"""
VOTE_BY_RATED_CLIPS = {
    0: _VOTE.format(ratings="", **_CONSTANTS),
    **{
        clips: _VOTE.format(
            **_CONSTANTS,
            ratings=_RATINGS.format(
                rows=", ".join(
                    f"(%(track_{i})s::bigint, %(score_{i})s::integer, %(listen_{i})s::integer)"
                    for i in range(clips)
                )
            ),
        )
        for clips in (1, 2)
    },
}


# --- playground.py: the playground's campaign, made once ------------------------------------

# A transaction-scoped advisory lock: the playground campaign is a row that may not exist yet,
# so there is no row to lock, and two first requests at once must not make two campaigns.
PLAYGROUND_CAMPAIGN_LOCK = "SELECT pg_advisory_xact_lock(hashtext('ratings.playground'))"
