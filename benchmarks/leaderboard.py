"""Bradley-Terry leaderboard with 1,000 bootstrap rounds on 1,000,000 simulated votes over 50
versions, read from PostgreSQL: seconds end to end, and the largest difference in rating
points from a reference fit (scipy's L-BFGS on the full likelihood).

    .venv/bin/python benchmarks/leaderboard.py            # 1,000,000 votes, 50 versions, 3 runs
    .venv/bin/python benchmarks/leaderboard.py --reuse    # keep the database if it is populated
    .venv/bin/python benchmarks/leaderboard.py --votes 200000 --runs 1 --baseline-rounds 1

1. Creates the database musicpref_leaderboard_bench (kept with --reuse when it already holds
   the requested votes), migrates it, and inserts with INSERT ... SELECT one preference campaign
   of 50 versions with known strengths (normal, sd 150 Elo): two pairs per version pair (each
   version on each side), the votes spread evenly over them, each outcome drawn by PostgreSQL
   from the Bradley-Terry probability with ties and both-bad votes; 1% of the votes flagged (so
   the counted filter has work to do). Loading is not part of the measurement.
2. Each run is the real service, `leaderboard_refresh(force=True)`: the aggregate query over the
   counted votes, the fit, the bootstrap rounds and storing the Leaderboard row.
3. Reference, same run: scipy's L-BFGS-B on the full (same prior) likelihood, to tight
   tolerances; the figure is the largest |our rating - reference| over versions, in Elo points,
   as stored (rounded to 0.01).
4. Baseline, same run: what FastChat's Chatbot Arena notebook does, a per-vote logistic
   regression (scikit-learn, dense design, every row duplicated so a tie is one win and one
   loss) refitted on a resample of the votes each round; timed for a few rounds and
   extrapolated to the same number of rounds.
The figures are medians of --runs runs. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scratch_db import database_create  # noqa: E402 (needs ROOT on the path)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/musicpref_leaderboard_bench"
STRENGTH_SD_ELO = 150.0


def django_setup(url: str, data_dir: Path, *, rounds: int) -> None:
    os.environ.update({
        "DATABASE_URL": url, "DATA_DIR": str(data_dir), "SECRET_KEY": "leaderboard-benchmark",
        "DJANGO_SETTINGS_MODULE": "config.settings", "CELERY_BROKER_URL": "filesystem://",
        "LOG_LEVEL": "WARNING", "LEADERBOARD_BOOTSTRAP_ROUNDS": str(rounds),
        "LEADERBOARD_MIN_VOTES": "20",
    })  # fmt: skip
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                   cwd=ROOT, check=True)  # fmt: skip
    import django

    django.setup()


def true_strengths(n_versions: int) -> np.ndarray:
    elo = np.random.default_rng(2024).normal(0.0, STRENGTH_SD_ELO, n_versions)
    return elo - elo.mean()  # the leaderboard's anchor: mean 1000


def seed_votes(*, votes: int, n_versions: int) -> int:
    """One preference campaign: two pairs per version pair, `votes` votes spread evenly over
    them, outcomes drawn by PostgreSQL from the versions' known strengths. Returns its id."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from generation.models import GeneratorVersion, Prompt, Track
    from ratings.models import Campaign, Pair, Rater

    with transaction.atomic():
        versions = GeneratorVersion.objects.bulk_create(
            GeneratorVersion(name=f"bench-v{k:02d}", backend="procedural")
            for k in range(n_versions)
        )
        sides = [(a, b) for a in versions for b in versions if a.pk != b.pk]
        per_pair = math.ceil(votes / len(sides))
        users = get_user_model().objects.bulk_create(
            get_user_model()(username=f"lb-bench-{i}", password="!") for i in range(per_pair)
        )
        rater_ids = [r.pk for r in Rater.objects.bulk_create(Rater(user=u) for u in users)]
        campaign = Campaign.objects.create(
            name="leaderboard bench", purpose="evaluate", protocol="preference",
            status="active", version_a=versions[0], version_b=versions[1],
            votes_per_item=min(per_pair, 1000),
        )  # fmt: skip
        prompts = Prompt.objects.bulk_create(
            Prompt(text=f"bench prompt {i}") for i in range(len(sides))
        )
        tracks = Track.objects.bulk_create(
            Track(prompt=p, generator_version=v, seed=i, audio=f"audio/{p.pk}-{v.pk}.ogg",
                  duration_seconds=10.0, sample_rate=48000)
            for i, (p, side) in enumerate(zip(prompts, sides, strict=True)) for v in side
        )  # fmt: skip
        Pair.objects.bulk_create(
            Pair(campaign=campaign, prompt=p, track_a=tracks[2 * i], track_b=tracks[2 * i + 1],
                 votes_wanted=per_pair)
            for i, p in enumerate(prompts)
        )  # fmt: skip
        strengths = true_strengths(n_versions)
        with connection.cursor() as cursor:
            _insert_votes(cursor, campaign.pk, rater_ids, votes, versions, strengths)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return campaign.pk


def _insert_votes(cursor, campaign_id, rater_ids, votes, versions, strengths) -> None:
    per_pair = len(rater_ids)
    cursor.execute(
        """INSERT INTO ratings_assignment
               (pair_id, rater_id, campaign_id, left_is_a, status, served_at, expires_at)
           SELECT p.id, r.id, p.campaign_id, mod(p.id + r.k, 2) = 0, 'voted',
                  now() - interval '1 minute', now()
           FROM (SELECT id, campaign_id, row_number() OVER (ORDER BY id) - 1 AS k
                 FROM ratings_pair WHERE campaign_id = %s) p
           CROSS JOIN unnest(%s::bigint[]) WITH ORDINALITY AS r(id, k)
           WHERE p.k * %s + r.k - 1 < %s""",
        [campaign_id, rater_ids, per_pair, votes],
    )
    cursor.execute("SELECT setseed(0.42)")
    # P(A wins) + P(tie) / 2 is the Bradley-Terry probability, so ties as half wins are the
    # true model; ties are split evenly between "tie" and "both bad"; 1% of votes flagged.
    cursor.execute(
        """INSERT INTO ratings_vote
               (assignment_id, pair_id, rater_id, campaign_id, choice, left_is_a, listen_ms_a,
                listen_ms_b, elapsed_ms, idempotency_key, status, created_at)
           SELECT a.id, a.pair_id, a.rater_id, a.campaign_id,
                  CASE WHEN d.u < d.p - d.t / 2 THEN 'a'
                       WHEN d.u < d.p + d.t / 2 THEN
                            CASE WHEN mod(a.id, 2) = 0 THEN 'tie' ELSE 'both_bad' END
                       ELSE 'b' END,
                  a.left_is_a, 10000, 10000, 25000, gen_random_uuid(),
                  CASE WHEN mod(a.id, 100) = 0 THEN 'flagged' ELSE 'counted' END, now()
           FROM ratings_assignment a
           JOIN ratings_pair p ON p.id = a.pair_id
           JOIN generation_track ta ON ta.id = p.track_a_id
           JOIN generation_track tb ON tb.id = p.track_b_id
           JOIN unnest(%s::bigint[], %s::float8[]) AS sa(version_id, elo)
                ON sa.version_id = ta.generator_version_id
           JOIN unnest(%s::bigint[], %s::float8[]) AS sb(version_id, elo)
                ON sb.version_id = tb.generator_version_id
           CROSS JOIN LATERAL (
               SELECT q.p, 0.3 * least(q.p, 1 - q.p) AS t, random() AS u
               FROM (SELECT 1 / (1 + power(10, (sb.elo - sa.elo) / 400)) AS p) q
           ) d
           WHERE a.campaign_id = %s""",
        [[v.pk for v in versions], strengths.tolist()] * 2 + [campaign_id],
    )


def reference_ratings(table) -> np.ndarray:
    """scipy's L-BFGS-B on the same objective (likelihood + prior) from zero, tight tolerances;
    scaled by the number of votes so the tolerances mean the same at any size."""
    from scipy.optimize import minimize

    from ratings import bradley_terry as bt

    precision = bt.prior_precision(bt.DEFAULT_PRIOR_SD_ELO)
    n_votes = float(table.totals.sum())

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = bt.negative_log_posterior(theta, table, precision)
        return value / n_votes, grad / n_votes

    result = minimize(
        objective, np.zeros(table.n_versions), jac=True, method="L-BFGS-B",
        options={"maxiter": 10_000, "ftol": 1e-15, "gtol": 1e-12},
    )  # fmt: skip
    return bt.to_elo(result.x)


def fastchat_round(first, second, outcome, n_versions, rng) -> np.ndarray:
    """One bootstrap round as FastChat's notebook does it: resample the votes, build the dense
    per-vote design (+log 10 / -log 10), duplicate every row so that a tie is one win and one
    loss, and fit an unpenalised logistic regression."""
    from sklearn.linear_model import LogisticRegression

    n = len(first)
    pick = rng.integers(0, n, n)
    a, b, o = first[pick], second[pick], outcome[pick]
    x = np.zeros((n, n_versions))
    x[np.arange(n), a] = math.log(10)
    x[np.arange(n), b] = -math.log(10)
    x = np.concatenate([x, x])
    y = np.zeros(2 * n)
    y[:n][o == 0] = 1.0  # A won: both copies say A
    y[n:][o == 0] = 1.0
    y[:n][o == 1] = 1.0  # a tie: one copy each way
    model = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-6, max_iter=1000)
    model.fit(x, y)
    return 400 * model.coef_[0] + 1000


def per_vote_rows(table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The counted votes, one row each (first, second, 0 = first won, 1 = tie, 2 = lost)."""
    counts = np.stack([table.wins, table.ties, table.losses], axis=1)
    first = np.repeat(np.repeat(table.first, 3), counts.ravel())
    second = np.repeat(np.repeat(table.second, 3), counts.ravel())
    outcome = np.repeat(np.tile(np.arange(3), len(table.first)), counts.ravel())
    return first, second, outcome


def measure(campaign_id: int, runs: int) -> tuple[list[float], object]:
    from ratings.leaderboards import leaderboard_refresh

    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        board = leaderboard_refresh(campaign_id=campaign_id, force=True)
        seconds.append(time.perf_counter() - started)
    return seconds, board


def breakdown(campaign_id: int, rounds: int):
    """Seconds of the query and of the point fit alone, and the compact table they share."""
    from ratings import bradley_terry as bt
    from ratings.leaderboards import campaign_outcome_counts
    from ratings.models import Campaign

    started = time.perf_counter()
    counts = campaign_outcome_counts(campaign=Campaign.objects.get(pk=campaign_id))
    query = time.perf_counter() - started
    ids = sorted({c.version_a for c in counts} | {c.version_b for c in counts})
    index = {pk: k for k, pk in enumerate(ids)}
    table = bt.OutcomeTable.from_counts(
        len(ids), ((index[c.version_a], index[c.version_b], c.a_wins, c.ties, c.b_wins)
                   for c in counts)
    )  # fmt: skip
    started = time.perf_counter()
    theta = bt.fit_strengths(table)
    fit = time.perf_counter() - started
    started = time.perf_counter()
    bt.bootstrap_strengths(table, theta, rounds=rounds, rng=np.random.default_rng(0))
    boot = time.perf_counter() - started
    return {"query_s": query, "fit_s": fit, "bootstrap_s": boot}, table, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--votes", type=int, default=1_000_000)
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-rounds", type=int, default=2, help="0: skip the baseline.")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("BENCH_DATA_DIR", tempfile.gettempdir())) / "lb-bench"
    existed = database_create(
        args.database_url, prefix="musicpref_leaderboard_bench", reuse=args.reuse
    )
    django_setup(args.database_url, data_dir, rounds=args.rounds)
    from ratings.models import Campaign, Vote

    campaign = Campaign.objects.filter(name="leaderboard bench").first()
    if campaign is None or Vote.objects.count() != args.votes:
        if existed and campaign is not None:
            raise SystemExit("the database holds other votes: run without --reuse")
        started = time.perf_counter()
        campaign_id = seed_votes(votes=args.votes, n_versions=args.versions)
        print(f"seeded {Vote.objects.count():,} votes in {time.perf_counter() - started:.0f} s")
    else:
        campaign_id = campaign.pk
    report(args, campaign_id)


def report(args: argparse.Namespace, campaign_id: int) -> None:
    from ratings.models import Vote

    seconds, board = measure(campaign_id, args.runs)
    parts, table, version_ids = breakdown(campaign_id, args.rounds)
    ours = {row["version"]: row for row in board.rows}
    reference = dict(zip(version_ids, reference_ratings(table), strict=True))
    max_diff = max(abs(ours[pk]["rating"] - reference[pk]) for pk in ours)
    from ratings import bradley_terry as bt

    unrounded = np.abs(bt.to_elo(bt.fit_strengths(table)) - np.array(list(reference.values())))
    truth = dict(zip(version_ids, 1000 + true_strengths(len(version_ids)), strict=True))
    covered = np.mean([ours[pk]["ci_low"] <= truth[pk] <= ours[pk]["ci_high"] for pk in ours])
    median = statistics.median(seconds)
    print(
        f"{board.vote_count:,} counted votes, {len(ours)} versions, {board.bootstrap_rounds} "
        f"rounds: {median:.2f} s end to end (median of {args.runs}: "
        f"{', '.join(f'{s:.2f}' for s in seconds)}); query {parts['query_s']:.2f} s, "
        f"fit {parts['fit_s']:.3f} s, bootstrap {parts['bootstrap_s']:.2f} s"
    )
    print(
        f"largest difference from scipy L-BFGS-B on the full likelihood: {max_diff:.4f} Elo "
        f"as stored (rounded to 0.01), {unrounded.max():.2e} Elo before rounding"
    )
    print(f"95% intervals containing the true strength: {covered:.0%} of versions")
    result = {
        "seconds": round(median, 3), "all_seconds": [round(s, 3) for s in seconds],
        "max_diff_elo": round(max_diff, 4), "max_diff_elo_unrounded": float(unrounded.max()),
        "votes_simulated": Vote.objects.count(), "votes": board.vote_count,
        "versions": len(ours),
        "rounds": board.bootstrap_rounds, "runs": args.runs,
        **{k: round(v, 3) for k, v in parts.items()},
        "true_strength_coverage": round(float(covered), 3),
    }  # fmt: skip
    if args.baseline_rounds:
        result |= baseline(table, args.rounds, args.baseline_rounds, median)
    print(json.dumps(result))


def baseline(table, rounds: int, timed_rounds: int, ours_seconds: float) -> dict:
    first, second, outcome = per_vote_rows(table)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for _ in range(timed_rounds):
        fastchat_round(first, second, outcome, table.n_versions, rng)
    per_round = (time.perf_counter() - started) / timed_rounds
    extrapolated = per_round * rounds
    print(
        f"baseline (FastChat-style per-vote logistic regression, {len(first):,} rows doubled): "
        f"{per_round:.2f} s per round, timed over {timed_rounds} rounds, extrapolated to "
        f"{rounds} rounds: {extrapolated:.0f} s, {extrapolated / ours_seconds:.0f} x ours"
    )
    return {
        "baseline_seconds_per_round": round(per_round, 3),
        "baseline_rounds_timed": timed_rounds,
        "baseline_seconds_extrapolated": round(extrapolated, 1),
        "speedup_vs_baseline": round(extrapolated / ours_seconds, 1),
    }


if __name__ == "__main__":
    main()
