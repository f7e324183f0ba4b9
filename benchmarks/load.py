"""Load: simulated raters on the real API flow against gunicorn and PostgreSQL, with Locust.

    .venv/bin/python benchmarks/load.py [--seconds 600] [--users 64]

Creates its own PostgreSQL database (musicpref_load, dropped first and afterwards), migrates
it, seeds a campaign with enough pairs that no rater runs out, one rater account with an API
token per simulated rater, and one real Ogg clip that every track serves; starts gunicorn
(the benchmark's usual 4 sync workers, DEBUG off, rate limits on but out of reach) and runs
Locust headless (benchmarks/load_locustfile.py): each user leases a pair, fetches both clips,
votes, and now and then resends a vote with the same idempotency key. Afterwards it checks
every acknowledged vote against the database: lost (acknowledged, not stored), doubled (a
key or a lease stored twice) and stored without an acknowledgement. Prints one JSON line:
requests/s, p50/p99 per endpoint, server errors, the vote accounting, CPU per request.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import process_stop  # noqa: E402 (ROOT above)
from benchmarks.scratch_db import database_create, database_drop  # noqa: E402
from benchmarks.vote_throughput import (  # noqa: E402
    DEFAULT_SERVER,
    POSTGRES_URL,
    base_env,
    cpu_cores_used,
    cpu_snapshot,
    django_setup,
    gunicorn_start,
    migrate,
    seed_scenario,
)

BIN = Path(sys.executable).parent
DB_PREFIX = "musicpref_load"
CLIP_NAME = "audio/bench-placeholder.ogg"  # what seed_scenario's tracks point at


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=600, help="How long Locust runs.")
    parser.add_argument("--users", type=int, default=64, help="Simulated raters.")
    parser.add_argument("--spawn-rate", type=float, default=16.0, help="Users started per s.")
    return parser.parse_args()


def clip_write(media_root: Path) -> None:
    """A real 4-second Ogg Vorbis clip, so the clip requests read and send real bytes."""
    path = media_root / CLIP_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    seconds = np.arange(4 * 22050) / 22050
    tone = 0.2 * np.sin(2 * np.pi * 440 * seconds)
    soundfile.write(path, tone, 22050, format="OGG", subtype="VORBIS")


def locust_run(args: argparse.Namespace, base_url: str, env: dict[str, str], out: Path) -> None:
    subprocess.run(
        [
            str(BIN / "locust"), "-f", str(ROOT / "benchmarks" / "load_locustfile.py"),
            "--headless", "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
            "--run-time", f"{args.seconds}s", "--host", base_url, "--csv", str(out / "locust"),
            "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "10",
        ],
        cwd=ROOT, env=env, check=False,  # Locust exits 1 when any request failed: we count them
    )  # fmt: skip


def endpoint_figures(stats_csv: Path, seconds: float) -> dict[str, dict[str, Any]]:
    figures = {}
    with stats_csv.open() as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated":
                continue
            figures[row["Name"]] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "requests_per_s": round(int(row["Request Count"]) / seconds, 1),
                "p50_ms": float(row["50%"]),
                "p99_ms": float(row["99%"]),
            }
    return figures


def vote_accounting(campaign_id: int, acknowledged: dict[str, int]) -> dict[str, int]:
    from django.db.models import Count

    from ratings.models import Vote

    votes = Vote.objects.filter(campaign_id=campaign_id)
    stored_ids = set(votes.values_list("pk", flat=True))
    acknowledged_ids = set(acknowledged.values())
    twice_per_key = votes.values("idempotency_key").annotate(n=Count("pk")).filter(n__gt=1)
    twice_per_lease = votes.values("assignment_id").annotate(n=Count("pk")).filter(n__gt=1)
    return {
        "acknowledged": len(acknowledged_ids),
        "stored": len(stored_ids),
        "lost": len(acknowledged_ids - stored_ids),
        "doubled": twice_per_key.count() + twice_per_lease.count(),
        "stored_unacknowledged": len(stored_ids - acknowledged_ids),
    }


def main() -> int:
    args = parse_args()
    database_url = f"{POSTGRES_URL}/{DB_PREFIX}"
    database_drop(database_url, prefix=DB_PREFIX)
    database_create(database_url, prefix=DB_PREFIX)
    work = Path(tempfile.mkdtemp(prefix="musicpref-load-"))
    env = {**base_env(database_url, str(work)), "SECRET_KEY": "load-benchmark"}
    server = None
    try:
        migrate(env)
        django_setup(env)
        # Every rater may vote on a pair once: more pairs than the fastest run could use.
        pairs = max(2000, int(150 * args.seconds / args.users * 1.5))
        scenario = seed_scenario(clients=args.users, pairs=pairs, tag="load", events=["Bar"])
        clip_write(work / "media")
        server, base_url = gunicorn_start(DEFAULT_SERVER, env, work / "gunicorn.log")
        result_path = work / "locust-result.json"
        locust_env = {
            **os.environ,
            "LOAD_TOKENS": ",".join(scenario.tokens),
            "LOAD_CAMPAIGN": str(scenario.campaign_id),
            "LOAD_RESULT": str(result_path),
        }
        cpu_before, started = cpu_snapshot(server.pid), time.perf_counter()
        locust_run(args, base_url, locust_env, work)
        elapsed = time.perf_counter() - started
        cores = cpu_cores_used(cpu_before, cpu_snapshot(server.pid))
        # Locust runs in its own process, so it is in "other", not in this process's share.
        for key in ("loadgen", "loadgen_share_of_machine"):
            cores.pop(key, None)
        process_stop(server)
        server = None
        result = json.loads(result_path.read_text())
        endpoints = endpoint_figures(work / "locust_stats.csv", elapsed)
        requests = sum(figures["requests"] for figures in endpoints.values())
        votes = vote_accounting(scenario.campaign_id, result["acknowledged"])
        server_errors = sum(result["server_errors"].values())
        summary = {
            "benchmark": "load",
            "users": args.users,
            "seconds": round(elapsed, 1),
            "server": DEFAULT_SERVER.label,
            "requests": requests,
            "requests_per_s": round(requests / elapsed, 1),
            "endpoints": endpoints,
            "server_errors": server_errors,
            "server_errors_by_endpoint": result["server_errors"],
            "votes": votes,
            "replays": result["replays"],
            "server_cpu_ms_per_request": round(
                1000 * cores.get("gunicorn", 0) * elapsed / max(requests, 1), 2
            ),
            "cpu_cores": cores,
            "ok": server_errors == 0
            and votes["lost"] == 0
            and votes["doubled"] == 0
            and votes["stored_unacknowledged"] == 0,
        }
        print(json.dumps(summary))
        return 0 if summary["ok"] else 1
    finally:
        if server is not None:
            process_stop(server)
        from django.db import connections

        connections.close_all()
        database_drop(database_url, prefix=DB_PREFIX)


if __name__ == "__main__":
    sys.exit(main())
