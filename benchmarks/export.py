"""Dataset snapshot export: rows per second and peak memory of the Parquet and JSONL exports of
1,000,000 votes, against PostgreSQL's own `COPY vote_table TO STDOUT` on the same machine.

    .venv/bin/python benchmarks/export.py            # 1,000,000 votes, 3 runs per format
    .venv/bin/python benchmarks/export.py --reuse    # keep the database if it is populated

1. Creates the PostgreSQL database musicpref_export_bench (kept with --reuse when it already
   holds the requested votes) and migrates it.
2. Bulk-inserts the votes with INSERT ... SELECT: a preference campaign of `pairs` pairs and a
   side-by-side campaign of a tenth as many, each pair voted by every rater (1,000 raters), the
   side-by-side votes with two 1-5 ratings each.
3. Baseline, same run: `COPY ratings_vote TO STDOUT` through psycopg, bytes discarded.
4. Each export runs the real job (snapshot_create + snapshot_build, votes, ratings and tracks
   tables and the manifest) in a fresh child process, so its peak RSS is its own.
The figures are medians of --runs runs. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scratch_db import database_create  # noqa: E402 (needs ROOT on the path)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/musicpref_export_bench"
RATERS = 1000


def seed_votes(*, pairs: int, raters: int) -> int:
    """Votes of `raters` raters on every one of `pairs` pairs: a tenth of the pairs in a
    side-by-side campaign (two 1-5 ratings per vote), the rest in a preference campaign,
    inserted set-wise by PostgreSQL. Placeholder audio names; no files. Returns the number of
    votes."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from generation.models import GeneratorVersion, Prompt, Track
    from ratings.models import Campaign, Pair, Rater

    with transaction.atomic():
        users = get_user_model().objects.bulk_create(
            get_user_model()(username=f"export-bench-{i}", password="!") for i in range(raters)
        )
        rater_ids = [r.pk for r in Rater.objects.bulk_create(Rater(user=u) for u in users)]
        versions = [
            GeneratorVersion.objects.create(name=f"export-bench-{side}", backend="procedural")
            for side in ("a", "b")
        ]
        scored = max(pairs // 10, 1)
        for protocol, count in (("preference", pairs - scored), ("side_by_side", scored)):
            campaign = Campaign.objects.create(
                name=f"export bench {protocol}", purpose="evaluate", protocol=protocol,
                status="active", version_a=versions[0], version_b=versions[1],
                votes_per_item=raters,
            )  # fmt: skip
            prompts = Prompt.objects.bulk_create(
                Prompt(text=f"{protocol} prompt, number {i}") for i in range(count)
            )
            tracks = Track.objects.bulk_create(
                Track(prompt=p, generator_version=v, seed=i, audio=f"audio/{p.pk}-{v.pk}.ogg",
                      duration_seconds=10.0, sample_rate=48000)
                for i, p in enumerate(prompts) for v in versions
            )  # fmt: skip
            Pair.objects.bulk_create(
                Pair(campaign=campaign, prompt=p, track_a=tracks[2 * i],
                     track_b=tracks[2 * i + 1], votes_wanted=raters)
                for i, p in enumerate(prompts)
            )  # fmt: skip
            with connection.cursor() as cursor:
                _insert_votes(cursor, campaign.pk, rater_ids, scored=protocol == "side_by_side")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    from ratings.models import Vote

    return Vote.objects.count()


def _insert_votes(cursor, campaign_id: int, rater_ids: list[int], *, scored: bool) -> None:
    cursor.execute(
        """INSERT INTO ratings_assignment
               (pair_id, rater_id, campaign_id, left_is_a, status, served_at, expires_at)
           SELECT p.id, r, p.campaign_id, mod(p.id + r, 2) = 0, 'voted',
                  now() - interval '1 minute', now()
           FROM ratings_pair p CROSS JOIN unnest(%s::bigint[]) r
           WHERE p.campaign_id = %s""",
        [rater_ids, campaign_id],
    )
    # Choices cycle a, b, a, tie, both_bad; created_at spreads over the past days so the
    # since/until filters have something to select.
    cursor.execute(
        """INSERT INTO ratings_vote
               (assignment_id, pair_id, rater_id, campaign_id, choice, left_is_a, listen_ms_a,
                listen_ms_b, elapsed_ms, idempotency_key, created_at)
           SELECT a.id, a.pair_id, a.rater_id, a.campaign_id,
                  CASE WHEN %s THEN NULL
                       ELSE (ARRAY['a', 'b', 'a', 'tie', 'both_bad'])[1 + mod(a.id, 5)] END,
                  a.left_is_a, 9000 + mod(a.id, 2000), 9000 + mod(a.id, 1500),
                  20000 + mod(a.id, 9000), gen_random_uuid(),
                  now() - make_interval(secs => a.id / 10.0)
           FROM ratings_assignment a WHERE a.campaign_id = %s ORDER BY a.id""",
        [scored, campaign_id],
    )
    if scored:
        cursor.execute(
            """INSERT INTO ratings_mosrating
                   (vote_id, track_id, rater_id, campaign_id, score, listen_ms, created_at)
               SELECT v.id, t.track_id, v.rater_id, v.campaign_id, 1 + mod(v.id + t.side, 5),
                      9000, v.created_at
               FROM ratings_vote v JOIN ratings_pair p ON p.id = v.pair_id
               CROSS JOIN LATERAL (VALUES (p.track_a_id, 0), (p.track_b_id, 1)) t(track_id, side)
               WHERE v.campaign_id = %s ORDER BY v.id, t.side""",
            [campaign_id],
        )


def django_setup(url: str, data_dir: Path, *, migrate: bool) -> None:
    os.environ.update({
        "DATABASE_URL": url, "DATA_DIR": str(data_dir), "SECRET_KEY": "export-benchmark",
        "DJANGO_SETTINGS_MODULE": "config.settings", "CELERY_BROKER_URL": "filesystem://",
        "LOG_LEVEL": "WARNING",
    })  # fmt: skip
    if migrate:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                       cwd=ROOT, check=True)  # fmt: skip
    import django

    django.setup()


def copy_baseline(url: str) -> tuple[float, int]:
    """(seconds, rows) of a plain COPY of the vote table: the floor any export stands on."""
    import psycopg

    rows = 0
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        started = time.perf_counter()
        with cursor.copy("COPY ratings_vote TO STDOUT") as copy:
            for _ in copy:
                rows += 1
        return time.perf_counter() - started, rows


def peak_rss_kb() -> int:
    """This process's peak RSS. Not ru_maxrss, which survives exec and so would count the
    parent this child was forked from."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


def child_export(fmt: str) -> None:
    """One export in this (fresh) process; prints its seconds, rows and peak RSS as JSON."""
    from ratings.dataset import DataFilters
    from ratings.snapshots import snapshot_build, snapshot_create

    before = peak_rss_kb()
    snapshot = snapshot_create(filters=DataFilters(), formats=[fmt], queue=False)
    started = time.perf_counter()
    snapshot = snapshot_build(snapshot_id=snapshot.pk)
    seconds = time.perf_counter() - started
    if snapshot.status != "finished":
        raise SystemExit(f"export failed: {snapshot.error}")
    peak = peak_rss_kb()
    size = sum(f.stat().st_size for f in snapshot.directory.rglob("*") if f.is_file())
    print(json.dumps({
        "seconds": seconds, "rows": snapshot.row_counts["votes"], "bytes": size,
        "peak_rss_mb": peak / 1024, "rss_before_mb": before / 1024,
    }))  # fmt: skip


def run_child(url: str, data_dir: Path, fmt: str) -> dict:
    env = os.environ | {"DATABASE_URL": url, "DATA_DIR": str(data_dir)}
    done = subprocess.run(
        [sys.executable, __file__, "--child", fmt, "--database-url", url],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--votes", type=int, default=1_000_000, help="A multiple of 10,000.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("BENCH_DATA_DIR", tempfile.gettempdir())) / "export-bench"
    if args.child:
        django_setup(args.database_url, data_dir, migrate=False)
        child_export(args.child)
        return
    existed = database_create(args.database_url, prefix="musicpref_export_bench", reuse=args.reuse)
    django_setup(args.database_url, data_dir, migrate=True)
    from ratings.models import DatasetSnapshot, Vote

    wanted = args.votes
    votes = Vote.objects.count()
    if votes != wanted:
        if existed and votes:
            raise SystemExit(f"the database holds {votes} votes, not {wanted}: run without --reuse")
        started = time.perf_counter()
        votes = seed_votes(pairs=args.votes // RATERS, raters=RATERS)
        print(f"seeded {votes:,} votes in {time.perf_counter() - started:.0f} s")
    DatasetSnapshot.objects.all().delete()
    report(args, votes, data_dir)


def report(args: argparse.Namespace, votes: int, data_dir: Path) -> None:
    copy_runs = [copy_baseline(args.database_url)[0] for _ in range(args.runs)]
    copy_rate = votes / statistics.median(copy_runs)
    print(f"baseline COPY ratings_vote TO STDOUT: {copy_rate:,.0f} rows/s")
    result: dict = {"votes": votes, "runs": args.runs, "copy_rows_per_second": round(copy_rate)}
    for fmt in ("parquet", "jsonl"):
        runs = [run_child(args.database_url, data_dir, fmt) for _ in range(args.runs)]
        seconds = statistics.median(r["seconds"] for r in runs)
        rate = votes / seconds
        peak = max(r["peak_rss_mb"] for r in runs)
        print(
            f"{fmt:8} {seconds:6.2f} s  {rate:10,.0f} rows/s  {rate / copy_rate:5.2f} x COPY  "
            f"peak RSS {peak:5.0f} MB (process before the export: {runs[0]['rss_before_mb']:.0f} "
            f"MB)  {runs[0]['bytes'] / 1e6:,.0f} MB written"
        )
        result[fmt] = {
            "seconds": round(seconds, 3), "rows_per_second": round(rate),
            "ratio_to_copy": round(rate / copy_rate, 3), "peak_rss_mb": round(peak),
            "rss_before_export_mb": round(runs[0]["rss_before_mb"]),
            "bytes_written": runs[0]["bytes"],
            "all_seconds": [round(r["seconds"], 3) for r in runs],
        }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
