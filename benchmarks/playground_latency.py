"""Playground latency: from submitting a prompt to a playable pair, as the page sees it.

    .venv/bin/python benchmarks/playground_latency.py [--users 1,4] [--rounds 6]
        [--clip-seconds 10] [--backend procedural|symbolic]

Creates its own PostgreSQL database (musicpref_playground_bench, dropped first), migrates it,
seeds one active generator version and one rater with a token per simulated user, and starts
gunicorn (2 sync workers) and ONE real Celery worker on the `generate` queue (solo pool, Redis
broker). One request first warms the worker (SoundFont and generator loaded), unmeasured.

Each simulated user then does what the page does, over HTTP: POST /api/v1/playground/requests/
with a new prompt, poll its status URL every 100 ms until it is ready with a lease (both clips,
never one), and submit the next prompt. Users run concurrently (threads), `rounds` requests
each. Per request it records the page's time to a playable pair, and from the database the
server's split: waiting in the queue (created -> worker started) and generating both clips
and forming the pair (started -> ready). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import free_port, process_stop, raters_create  # noqa: E402 (ROOT above)
from benchmarks.scratch_db import database_create, database_drop  # noqa: E402 (ROOT above)

BIN = Path(sys.executable).parent
DB_NAME = "musicpref_playground_bench"
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
DATABASE_URL = f"{POSTGRES_URL}/{DB_NAME}"
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/9")
REQUESTS_PATH = "/api/v1/playground/requests/"
POLL_SECONDS = 0.1
PROMPTS = [
    "calm piano in C major at 80 bpm",
    "fast techno with drums",
    "sad strings in D minor",
    "happy ukulele and whistling",
    "epic orchestral brass",
    "dreamy synth pads at 70 bpm",
    "funky bass and drums",
    "nostalgic acoustic guitar",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="1,4", help="Comma-separated concurrency levels.")
    parser.add_argument("--rounds", type=int, default=6, help="Requests per user per level.")
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--backend", choices=["procedural", "symbolic"], default="procedural")
    parser.add_argument("--timeout", type=float, default=120.0, help="Per request.")
    args = parser.parse_args()
    args.levels = [int(part) for part in args.users.split(",") if part.strip()]
    return args


# --- Setup ----------------------------------------------------------------------------------


def _fresh_database() -> str:
    database_create(DATABASE_URL, prefix=DB_NAME)
    return DATABASE_URL


def base_env(database_url: str, data_dir: str, args: argparse.Namespace) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATA_DIR": data_dir,
        "MEDIA_ROOT": str(Path(data_dir) / "media"),
        "SECRET_KEY": "playground-latency-benchmark",
        "DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "CELERY_BROKER_URL": BROKER_URL,
        "PLAYGROUND_CLIP_SECONDS": str(args.clip_seconds),
        "PLAYGROUND_TIMEOUT_SECONDS": str(int(args.timeout)),
        "LOG_LEVEL": "WARNING",
    }


def migrate(env: dict[str, str]) -> None:
    command = [str(BIN / "python"), "manage.py", "migrate", "--noinput", "-v", "0"]
    subprocess.run(command, cwd=ROOT, env=env, check=True)


def django_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


def gunicorn_start(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server_env = {**env, "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "2"}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "--config", "platform/gunicorn.conf.py", "config.wsgi"],
            cwd=ROOT, env=server_env, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2):
                return process, base_url
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not become healthy in time")


def seed(args: argparse.Namespace, users: int) -> list[str]:
    from generation.music.backends import SHIPPED_GENERATOR
    from generation.services import generator_version_register

    generator_version_register(
        name=f"bench-{args.backend}",
        backend=args.backend,
        checkpoint=SHIPPED_GENERATOR if args.backend == "symbolic" else "",
        status="active",
    )
    return raters_create(prefix="playground", count=users)


def worker_start(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [
                str(BIN / "celery"), "-A", "config", "worker", "--queues", "generate",
                "--pool", "solo", "--without-gossip", "--without-mingle", "--loglevel", "WARNING",
            ],
            cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip


def broker_purge() -> None:
    import redis

    client = redis.Redis.from_url(BROKER_URL)
    client.delete("generate")  # leftovers of an interrupted run would be timed as ours


# --- One simulated user ---------------------------------------------------------------------


def call(base_url: str, token: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        base_url + path,
        data=data,
        method="POST" if body is not None else "GET",
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def one_request(base_url: str, token: str, prompt: str, timeout: float) -> dict[str, Any]:
    """POST, then poll as the page does; seconds until a playable pair (or the failure)."""
    started = time.perf_counter()
    status, body = call(base_url, token, REQUESTS_PATH, {"prompt": prompt})
    if status not in (200, 201):
        return {"ok": False, "error": f"POST {status}: {body}"}
    first_generating = None
    while time.perf_counter() - started < timeout:
        if body.get("status") == "generating" and first_generating is None:
            first_generating = time.perf_counter() - started
        if body.get("status") == "ready" and body.get("lease"):
            if len(body["lease"]["clips"]) != 2:
                return {"ok": False, "error": "a ready request without both clips"}
            return {
                "ok": True, "id": body["id"], "seconds": time.perf_counter() - started,
                "seen_generating": first_generating,
            }  # fmt: skip
        if body.get("status") == "failed":
            return {"ok": False, "error": body.get("error")}
        time.sleep(POLL_SECONDS)
        status, body = call(base_url, token, body["url"])
    return {"ok": False, "error": "timed out"}


def run_level(base_url: str, tokens: list[str], rounds: int, timeout: float, tag: str) -> list:
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def user(index: int, token: str) -> None:
        for round_ in range(rounds):
            prompt = f"{PROMPTS[(index + round_) % len(PROMPTS)]} ({tag} {index}.{round_})"
            result = one_request(base_url, token, prompt, timeout)
            with lock:
                results.append(result)

    threads = [threading.Thread(target=user, args=pair) for pair in enumerate(tokens)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# --- Figures --------------------------------------------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(p95, 3),
        "max": round(ordered[-1], 3),
        "n": len(ordered),
    }


def server_split(ids: list[int]) -> dict[str, dict]:
    """From the rows: queue wait (created -> started) and generation (started -> ready)."""
    from ratings.models import PlaygroundRequest

    rows = PlaygroundRequest.objects.filter(pk__in=ids).values_list(
        "created_at", "started_at", "finished_at"
    )
    waits = [(s - c).total_seconds() for c, s, f in rows if s]
    makes = [(f - s).total_seconds() for c, s, f in rows if s and f]
    return {"queue_wait_s": percentiles(waits), "generate_pair_s": percentiles(makes)}


def level_figures(users: int, results: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    done = [r for r in results if r["ok"]]
    figures = {
        "users": users,
        "requests": len(results),
        "failed": len(results) - len(done),
        "errors": sorted({str(r["error"]) for r in results if not r["ok"]})[:5],
        "submit_to_playable_s": percentiles([r["seconds"] for r in done]),
        "pairs_per_minute": round(60 * len(done) / wall, 2) if wall else None,
        **server_split([r["id"] for r in done]),
    }
    latency = figures["submit_to_playable_s"]
    print(
        f"{users} user(s): p50 {latency['p50']} s, p95 {latency['p95']} s over {latency['n']} "
        f"pairs | queue wait p50 {figures['queue_wait_s']['p50']} s, generating both clips p50 "
        f"{figures['generate_pair_s']['p50']} s | failed {figures['failed']}",
        flush=True,
    )
    return figures


def main() -> int:
    args = parse_args()
    data_dir = tempfile.mkdtemp(prefix="playground-bench-")
    worker = server = None
    levels: list[dict[str, Any]] = []
    try:
        env = base_env(_fresh_database(), data_dir, args)
        migrate(env)
        django_setup(env)
        tokens = seed(args, max(args.levels))
        broker_purge()
        worker = worker_start(env, Path(data_dir) / "worker.log")
        server, base_url = gunicorn_start(env, Path(data_dir) / "web.log")
        warm = one_request(base_url, tokens[0], "warm-up: calm piano", args.timeout)
        print(f"warm-up (cold worker): {warm.get('seconds', warm.get('error'))}", flush=True)
        for users in args.levels:
            started = time.perf_counter()
            results = run_level(base_url, tokens[:users], args.rounds, args.timeout, f"u{users}")
            levels.append(level_figures(users, results, time.perf_counter() - started))
    finally:
        for process in (server, worker):
            if process is not None:
                process_stop(process)
        if "django.db" in sys.modules:
            from django.db import connections

            connections.close_all()
        database_drop(DATABASE_URL, prefix=DB_NAME)
        shutil.rmtree(data_dir, ignore_errors=True)
    result = {
        "benchmark": "playground_latency",
        "measured": "HTTP as the page does it: POST, then GET the status URL every 100 ms",
        "backend": args.backend,
        "clip_seconds": args.clip_seconds,
        "worker": "1 Celery worker, solo pool, generate queue, warmed by one request",
        "web": "gunicorn, 2 sync workers",
        "cpu_count": os.cpu_count(),
        "warm_up_s": round(warm["seconds"], 3) if warm.get("ok") else None,
        "levels": levels,
        "target_p50_one_user_s": 5.0,
    }
    one_user = next((level for level in levels if level["users"] == 1), None)
    if one_user:
        result["meets_target"] = (one_user["submit_to_playable_s"]["p50"] or 1e9) < 5.0
    print(json.dumps(result))
    return 0 if all(level["failed"] == 0 for level in levels) else 1


if __name__ == "__main__":
    sys.exit(main())
