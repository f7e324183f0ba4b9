"""Vote submission over HTTP, with auth and all checks, at 16-64 concurrent clients.

    .venv/bin/python benchmarks/vote_throughput.py [--seconds 20] [--clients 16,64]

Creates its own PostgreSQL database (musicpref_bench, dropped first), migrates and seeds it,
times a bare single-row INSERT loop through psycopg 3 as this machine's baseline, and starts
gunicorn on the database with DEBUG off. Then it drives lease+vote cycles (GET next, POST vote)
from N concurrent clients, each with its own rater token, on keep-alive connections (gunicorn's
sync workers, the default here, still close each one; gthread workers would keep them).
Afterwards it checks that every accepted vote is stored and no pair is over its votes_wanted,
drops the database, and prints one JSON object with every figure as its last line.

The load generator is one asyncio process with aiohttp, because the server shares the machine's
cores with it; its own CPU use is measured and printed next to the server's and PostgreSQL's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import free_port, process_stop, raters_create  # noqa: E402 (ROOT above)

BIN = Path(sys.executable).parent
DB_NAME = "musicpref_bench"
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
NEXT_PATH = "/api/v1/assignments/next/"
VOTES_PATH = "/api/v1/votes/"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ServerConfig:
    """A gunicorn setting, passed through the environment platform/gunicorn.conf.py reads."""

    workers: int
    worker_class: str = "sync"
    threads: int = 1

    @property
    def label(self) -> str:
        threads = f"x{self.threads} threads" if self.worker_class == "gthread" else ""
        return f"{self.workers} {self.worker_class} workers{threads}"

    def env(self, port: int) -> dict[str, str]:
        return {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": str(self.workers),
            "GUNICORN_WORKER_CLASS": self.worker_class,
            "GUNICORN_THREADS": str(self.threads),
        }


# Chosen with --sweep on the quiet 2-core machine (8 s per level, 16 clients): 4 sync workers
# gave 76 cycles/s at 18 ms of server CPU per cycle; 6 sync 64 (22 ms); gthread 2x4 61 (22 ms),
# 3x4 58 (23 ms), 4x2 67 (22 ms), 2x8 48 (27 ms). The work is CPU-bound Python, so threads
# only add GIL contention, and more processes than 2 per core only add switching.
DEFAULT_SERVER = ServerConfig(workers=4, worker_class="sync")
SWEEP = [
    ServerConfig(4),
    ServerConfig(6),
    ServerConfig(2, "gthread", 4),
    ServerConfig(3, "gthread", 4),
    ServerConfig(4, "gthread", 2),
    ServerConfig(2, "gthread", 8),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="Measured time per level.")
    parser.add_argument("--warmup", type=float, default=3.0, help="Unmeasured lead-in.")
    parser.add_argument("--clients", default="16,64", help="Comma-separated concurrency levels.")
    parser.add_argument("--insert-seconds", type=float, default=5.0)
    parser.add_argument("--floor-seconds", type=float, default=5.0, help="GET /healthz run.")
    parser.add_argument("--workers", type=int, default=DEFAULT_SERVER.workers)
    parser.add_argument("--worker-class", default=DEFAULT_SERVER.worker_class)
    parser.add_argument("--threads", type=int, default=DEFAULT_SERVER.threads)
    parser.add_argument("--sweep", action="store_true", help="Try several gunicorn settings.")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Also sample the gunicorn workers with py-spy during one extra 16-client run.",
    )
    args = parser.parse_args()
    args.levels = [int(part) for part in args.clients.split(",") if part.strip()]
    return args


# --- Database -------------------------------------------------------------------------------


def database_recreate() -> str:
    """A fresh database for this run; returns its URL."""
    with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as conn:
        name = sql.Identifier(DB_NAME)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    return f"{POSTGRES_URL}/{DB_NAME}"


def database_drop() -> None:
    with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB_NAME))
        )


def insert_baseline(database_url: str, seconds: float) -> dict[str, float]:
    """Single-row INSERTs, one connection, autocommit: one durable commit each, like a vote."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bench_insert (id bigserial PRIMARY KEY, n integer NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )
        count, started = 0, time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            conn.execute("INSERT INTO bench_insert (n) VALUES (%s)", (count,))
            count += 1
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_insert")
    return {"inserts": count, "seconds": round(elapsed, 2), "inserts_per_s": count / elapsed}


def base_env(database_url: str, data_dir: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATA_DIR": data_dir,
        "SECRET_KEY": "vote-throughput-benchmark",
        "DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "CELERY_BROKER_URL": "filesystem://",
        # The throttle still runs on every vote; it just must not refuse the benchmark's pace.
        "VOTE_RATE_LIMIT_PER_MINUTE": "10000000",
        "VOTE_RATE_LIMIT_PER_IP_PER_MINUTE": "10000000",
        "LOG_LEVEL": "WARNING",
    }


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [str(BIN / "python"), "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )


def django_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


# --- Seeding (through the ORM, in bulk) -----------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    campaign_id: int
    tokens: list[str]
    pairs: int


def pairs_needed(clients: int, seconds: float) -> int:
    # Each rater may vote on a pair once: give every client more pairs than it could cycle
    # through at 1,000 cycles/s shared by all clients.
    return max(2000, int(1000 * seconds / clients * 1.5))


# What the procedural backend stores for a 10 s clip: ~1,400 REMI events, ~18 KB of JSON.
REALISTIC_EVENTS = ["Bar", "Position_0", "Program_81", "Pitch_60", "Velocity_80", "Duration_4"]
REALISTIC_EVENTS = (REALISTIC_EVENTS * 234)[:1400]


def seed_scenario(
    *, clients: int, pairs: int, tag: str, events: list[str] = REALISTIC_EVENTS
) -> Scenario:
    """A campaign with no listening gate, `pairs` placeholder pairs that each take up to
    `clients` votes (slots never run out), and one rater with a token per client."""
    from generation.models import GeneratorVersion, Prompt
    from ratings.models import Campaign, Pair

    version, _ = GeneratorVersion.objects.get_or_create(
        name="bench", defaults={"backend": "procedural", "status": "active"}
    )
    prompt, _ = Prompt.objects.get_or_create(text="benchmark prompt")
    campaign = Campaign.objects.create(
        name=f"bench {tag}",
        purpose=Campaign.Purpose.COLLECT,
        protocol=Campaign.Protocol.PREFERENCE,
        status=Campaign.Status.ACTIVE,
        version_a=version,
        votes_per_item=clients,
        min_listen_seconds=0,
        clip_seconds=10,
    )
    tracks = _tracks_create(prompt=prompt, version=version, count=2 * pairs, events=events)
    items = [
        Pair(campaign=campaign, prompt=prompt, track_a=a, track_b=b, votes_wanted=clients)
        for a, b in zip(tracks[::2], tracks[1::2], strict=True)
    ]
    Pair.objects.bulk_create(items, batch_size=5000)
    return Scenario(campaign.pk, raters_create(prefix=f"bench-{tag}", count=clients), pairs)


def _tracks_create(*, prompt: Any, version: Any, count: int, events: list[str]) -> list:
    """Placeholder audio (the lease and vote path never read it) but realistic events, so a
    hot path that loaded them would pay for it here as it would in production."""
    from generation.models import Track

    first_seed = Track.objects.count()  # seeds must differ per (prompt, version)
    tracks = [
        Track(
            prompt=prompt,
            generator_version=version,
            seed=first_seed + i,
            audio="audio/bench-placeholder.ogg",
            duration_seconds=10,
            sample_rate=48000,
            events=events,
        )
        for i in range(count)
    ]
    return Track.objects.bulk_create(tracks, batch_size=5000)


# --- The server -----------------------------------------------------------------------------


def gunicorn_start(
    config: ServerConfig, env: dict[str, str], log_path: Path
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "--config", "platform/gunicorn.conf.py", "config.wsgi"],
            cwd=ROOT,
            env={**env, **config.env(port)},
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own process group, so stopping it stops its workers
        )
    base_url = f"http://127.0.0.1:{port}"
    wait_healthy(process, base_url)
    return process, base_url


def wait_healthy(process: subprocess.Popen, base_url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}; see its log")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not become healthy in time")


# --- CPU accounting -------------------------------------------------------------------------


def _proc_stat(pid: int | str) -> tuple[str, int, float] | None:
    """(command name, parent pid, CPU seconds) of one process, or None if it is gone. The
    CPU includes its reaped children's, so a worker that exits and is replaced still counts."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return name, int(fields[1]), sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def cpu_snapshot(server_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the gunicorn tree, PostgreSQL, this process and the whole
    machine (the rest is everything else running here)."""
    stats = {pid: _proc_stat(pid) for pid in os.listdir("/proc") if pid.isdigit()}
    stats = {int(pid): stat for pid, stat in stats.items() if stat is not None}
    gunicorn = sum(cpu for pid, (_, ppid, cpu) in stats.items() if server_pid in (pid, ppid))
    postgres = sum(cpu for name, _, cpu in stats.values() if name == "postgres")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/stat") as proc_stat:
        jiffies = [int(value) for value in proc_stat.readline().split()[1:]]
    idle = jiffies[3] + jiffies[4]
    return {
        "gunicorn": gunicorn,
        "postgres": postgres,
        "loadgen": usage.ru_utime + usage.ru_stime,
        "machine_busy": (sum(jiffies[:8]) - idle) / CLOCK_TICKS,
        "wall": time.monotonic(),
    }


def cpu_cores_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Average cores each part kept busy over the window (the machine has os.cpu_count())."""
    wall = after["wall"] - before["wall"]
    used = {key: (after[key] - before[key]) / wall for key in before if key != "wall"}
    used["other"] = max(
        0.0, used["machine_busy"] - used["gunicorn"] - used["postgres"] - used["loadgen"]
    )
    used["loadgen_share_of_machine"] = used["loadgen"] / (os.cpu_count() or 1)
    return {key: round(value, 3) for key, value in used.items()}


# --- The load generator ---------------------------------------------------------------------


@dataclass
class LoadStats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"next": [], "vote": []})
    errors: Counter[str] = field(default_factory=Counter)
    cycles: int = 0  # votes accepted inside the measured window
    requests: int = 0  # requests completed inside the measured window
    accepted_votes: int = 0  # every 201, warm-up and overrun included: what the DB must hold
    exhausted_clients: int = 0


@dataclass(frozen=True)
class Window:
    start: float
    end: float

    def holds(self, began: float, ended: float) -> bool:
        return began >= self.start and ended <= self.end


async def _timed(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, bytes, float, float]:
    began = time.perf_counter()
    async with session.request(method, url, **kwargs) as response:
        body = await response.read()
    return response.status, body, began, time.perf_counter()


def _record(stats: LoadStats, window: Window, kind: str, timing: tuple, ok: int) -> None:
    status, _, began, ended = timing
    if status != ok:
        stats.errors[f"{kind} {status}"] += 1
    if window.holds(began, ended):
        stats.requests += 1
        stats.latencies[kind].append(ended - began)


async def client_loop(
    session: aiohttp.ClientSession, token: str, campaign_id: int, window: Window, stats: LoadStats
) -> None:
    """One rater: lease, vote at once (the campaign has no listening gate), repeat."""
    headers = {"Authorization": f"Token {token}"}
    while time.perf_counter() < window.end:
        try:
            timing = await _timed(
                session, "GET", NEXT_PATH, params={"campaign": campaign_id}, headers=headers
            )
            if timing[0] == 204:
                stats.exhausted_clients += 1
                return
            _record(stats, window, "next", timing, ok=200)
            if timing[0] != 200:
                continue
            timing = await _timed(
                session, "POST", VOTES_PATH, json=_vote_body(timing[1]), headers=headers
            )
            _record(stats, window, "vote", timing, ok=201)
            if timing[0] == 201:
                stats.accepted_votes += 1
                stats.cycles += window.holds(timing[2], timing[3])
        except (TimeoutError, aiohttp.ClientError) as exc:
            stats.errors[type(exc).__name__] += 1


def _vote_body(lease_body: bytes) -> dict[str, Any]:
    lease = json.loads(lease_body)
    return {
        "assignment": lease["assignment"],
        "idempotency_key": str(uuid.uuid4()),
        "listen_ms": {clip["slot"]: clip["required_listen_ms"] for clip in lease["clips"]},
        "choice": "A",
    }


async def drive(
    base_url: str, scenario: Scenario, warmup: float, seconds: float, server_pid: int
) -> tuple[LoadStats, dict[str, float]]:
    """All clients at once; CPU is sampled at the edges of the measured window."""
    stats = LoadStats()
    now = time.perf_counter()
    window = Window(now + warmup, now + warmup + seconds)
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as session:
        clients = [
            client_loop(session, token, scenario.campaign_id, window, stats)
            for token in scenario.tokens
        ]
        cpu = asyncio.create_task(_sample_cpu(window, server_pid))
        await asyncio.gather(*clients)
        cores = await cpu
    return stats, cores


async def _sample_cpu(window: Window, server_pid: int) -> dict[str, float]:
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    before = cpu_snapshot(server_pid)
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    return cpu_cores_used(before, cpu_snapshot(server_pid))


async def drive_floor(base_url: str, clients: int, seconds: float) -> dict[str, Any]:
    """The framework's floor on this machine in this run: GET /healthz (all middleware, no
    database) from the same load generator, to read the vote figures against."""
    stats = LoadStats(latencies={"healthz": []})
    now = time.perf_counter()
    window = Window(now + 1.0, now + 1.0 + seconds)

    async def loop(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < window.end:
            _record(stats, window, "healthz", await _timed(session, "GET", "/healthz"), ok=200)

    async with aiohttp.ClientSession(base_url, connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(loop(session) for _ in range(clients)))
    return {
        "clients": clients,
        "requests_per_s": round(stats.requests / seconds, 1),
        "latency_ms": _percentiles_ms(stats.latencies["healthz"]),
        "errors": dict(stats.errors),
    }


# --- Verification and figures ---------------------------------------------------------------


def verify(scenario: Scenario, accepted_votes: int) -> dict[str, Any]:
    """Every accepted vote is stored once, and no pair holds more than it wanted."""
    from django.db.models import Count, F, Q

    from ratings.models import Pair, Vote

    pairs = Pair.objects.filter(campaign_id=scenario.campaign_id)
    stored = Vote.objects.filter(campaign_id=scenario.campaign_id).count()
    over = pairs.filter(Q(vote_count__gt=F("votes_wanted")) | Q(slots_taken__gt=F("votes_wanted")))
    counted = pairs.annotate(n=Count("votes"))
    result = {
        "votes_stored": stored,
        "successful_posts": accepted_votes,
        "pairs_over_votes_wanted": over.count() + counted.filter(n__gt=F("votes_wanted")).count(),
        "pairs_counter_mismatch": counted.exclude(n=F("vote_count")).count(),
    }
    result["ok"] = (
        stored == accepted_votes
        and result["pairs_over_votes_wanted"] == 0
        and result["pairs_counter_mismatch"] == 0
    )
    return result


def _percentiles_ms(samples: list[float]) -> dict[str, float | int]:
    if len(samples) < 2:
        return {"n": len(samples)}
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "n": len(samples),
        "p50": round(cuts[49] * 1000, 2),
        "p99": round(cuts[98] * 1000, 2),
        "max": round(max(samples) * 1000, 2),
    }


def run_figures(clients: int, seconds: float, stats: LoadStats, cores: dict) -> dict[str, Any]:
    return {
        "clients": clients,
        "seconds": seconds,
        "cycles_per_s": round(stats.cycles / seconds, 1),
        "requests_per_s": round(stats.requests / seconds, 1),
        "latency_ms": {kind: _percentiles_ms(v) for kind, v in stats.latencies.items()},
        "errors": dict(stats.errors),
        "error_count": sum(stats.errors.values()),
        "exhausted_clients": stats.exhausted_clients,
        "cpu_cores": cores,
        # CPU per cycle is what other load on a shared machine changes least.
        "cpu_ms_per_cycle": {
            part: round(cores[part] * 1000 * seconds / stats.cycles, 2) if stats.cycles else None
            for part in ("gunicorn", "postgres", "loadgen")
        },
    }


def print_run(server: ServerConfig, figures: dict[str, Any]) -> None:
    latency = figures["latency_ms"]
    cores = figures["cpu_cores"]
    print(
        f"[{server.label}] {figures['clients']:>3} clients: "
        f"{figures['cycles_per_s']:7.1f} cycles/s, {figures['requests_per_s']:7.1f} req/s | "
        f"next p50 {latency['next'].get('p50')} p99 {latency['next'].get('p99')} ms | "
        f"vote p50 {latency['vote'].get('p50')} p99 {latency['vote'].get('p99')} ms | "
        f"errors {figures['error_count']} {figures['errors'] or ''}| "
        f"cycles/insert {figures['cycles_per_insert']:.3f}, cycles/healthz "
        f"{figures['cycles_per_healthz']:.3f} | verified {figures['verify']['ok']}",
        flush=True,
    )
    print(
        f"    cpu cores: gunicorn {cores['gunicorn']}, postgres {cores['postgres']}, "
        f"load generator {cores['loadgen']} ({cores['loadgen_share_of_machine']:.0%} of the "
        f"machine), other {cores['other']}, machine busy {cores['machine_busy']} | "
        f"cpu ms per cycle {figures['cpu_ms_per_cycle']}",
        flush=True,
    )


# --- Profiling (--profile) ------------------------------------------------------------------


def py_spy_start(server_pid: int, seconds: float, output: Path) -> subprocess.Popen | None:
    """Sample every gunicorn worker (py-spy record --subprocesses) for the measured window."""
    binary = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if binary is None:
        print("py-spy is not installed; skipping the worker profile", flush=True)
        return None
    command = [binary, "record", "--pid", str(server_pid), "--subprocesses", "--rate", "250"]
    command += ["--duration", str(int(seconds)), "--format", "raw", "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def py_spy_summary(collapsed: Path, top: int = 30) -> dict[str, Any]:
    """Where the workers' time inside the API views goes: the inclusive share of samples per
    function below APIView.dispatch (each function counted once per stack)."""
    inclusive: Counter[str] = Counter()
    total = in_views = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f"{frame.split(' (')[0]} {_short_path(frame)}" for frame in stack.split(";")]
        total += int(count)
        view_at = next((i for i, f in enumerate(frames) if f.startswith("APIView.dispatch")), None)
        if view_at is None:
            continue
        in_views += int(count)
        for frame in set(frames[view_at + 1 :]):
            inclusive[frame] += int(count)
    print(f"    {in_views / max(total, 1):.1%} of the samples are inside the API views; of those:")
    shares = [(frame, n / max(in_views, 1)) for frame, n in inclusive.most_common(top)]
    for frame, share in shares:
        print(f"    {share:6.1%}  {frame}")
    return {
        "share_in_views": round(in_views / max(total, 1), 4),
        "inside_views": [(frame, round(share, 4)) for frame, share in shares],
    }


def _short_path(frame: str) -> str:
    """The file of a py-spy frame "function (path:line)", without the line and the venv."""
    location = frame.split(" (", 1)[1].rstrip(")") if " (" in frame else ""
    return location.rsplit(":", 1)[0].split("site-packages/")[-1].split(f"{ROOT}/")[-1]


# --- Orchestration --------------------------------------------------------------------------


def benchmark_server(
    server: ServerConfig, args: argparse.Namespace, env: dict[str, str], baseline: float
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Seed one fresh campaign per level, then run the levels against one gunicorn. With
    --profile, one more 16-client run has py-spy attached (its figures are kept apart, since
    the sampler itself takes CPU)."""
    from django.db import connections

    scenarios, spied = _seed_levels(server, args)
    connections.close_all()
    log = Path(tempfile.gettempdir()) / f"vote-throughput-gunicorn-{os.getpid()}.log"
    process, base_url = gunicorn_start(server, env, log)
    try:
        floor = asyncio.run(drive_floor(base_url, min(args.levels), args.floor_seconds))
        print(f"[{server.label}] floor: GET /healthz {floor['requests_per_s']} req/s", flush=True)
        measured = []
        for scenario in scenarios:
            stats, cores = asyncio.run(
                drive(base_url, scenario, args.warmup, args.seconds, process.pid)
            )
            # Something else on a shared machine may stop the server; such a run is void.
            measured.append((stats, cores, process.poll() is None))
        profile = _spied_run(process.pid, base_url, spied, args) if spied else None
    finally:
        process_stop(process)
    results = [
        _level_result(server, scenario, stats, cores, args.seconds, baseline, floor)
        | {"server_alive": alive}
        for scenario, (stats, cores, alive) in zip(scenarios, measured, strict=True)
    ]
    if all(figures["server_alive"] for figures in results):
        log.unlink(missing_ok=True)
    else:
        print(f"gunicorn stopped during a run; its log is {log}", flush=True)
    connections.close_all()
    return results, profile


def _seed_levels(
    server: ServerConfig, args: argparse.Namespace
) -> tuple[list[Scenario], Scenario | None]:
    """A fresh campaign and raters per level, so every level starts from the same state."""
    tag = f"{server.workers}{server.worker_class}{server.threads}"
    seconds = args.warmup + args.seconds
    scenarios = [
        seed_scenario(clients=n, pairs=pairs_needed(n, seconds), tag=f"{tag}-{n}")
        for n in args.levels
    ]
    if not args.profile:
        return scenarios, None
    return scenarios, seed_scenario(clients=16, pairs=pairs_needed(16, seconds), tag=f"{tag}-spy")


def _level_result(
    server: ServerConfig,
    scenario: Scenario,
    stats: LoadStats,
    cores: dict[str, float],
    seconds: float,
    baseline: float,
    floor: dict[str, Any],
) -> dict[str, Any]:
    figures = run_figures(len(scenario.tokens), seconds, stats, cores)
    figures["cycles_per_insert"] = round(figures["cycles_per_s"] / baseline, 4)
    # The shared host's speed drifts between runs; this ratio to GET /healthz in the same
    # run moves much less than the raw rates do.
    figures["healthz_floor"] = floor
    figures["cycles_per_healthz"] = round(
        figures["cycles_per_s"] / max(floor["requests_per_s"], 1), 4
    )
    figures["verify"] = verify(scenario, stats.accepted_votes)
    figures["server"] = asdict(server)
    print_run(server, figures)
    return figures


def _spied_run(
    server_pid: int, base_url: str, scenario: Scenario, args: argparse.Namespace
) -> dict[str, Any]:
    output = Path(tempfile.gettempdir()) / f"vote-throughput-py-spy-{server_pid}.txt"
    spy = py_spy_start(server_pid, args.warmup + args.seconds, output)
    stats, cores = asyncio.run(drive(base_url, scenario, args.warmup, args.seconds, server_pid))
    result = run_figures(len(scenario.tokens), args.seconds, stats, cores)
    print(f"profiled run (py-spy attached): {result['cycles_per_s']} cycles/s")
    if spy is None or spy.wait(timeout=60) != 0 or not output.exists():
        return {"run": result, "py_spy": None}
    print(f"py-spy, inclusive share of gunicorn samples (raw stacks in {output}):")
    return {"run": result, "py_spy": py_spy_summary(output)}


def summary(args: argparse.Namespace, baseline: dict, runs: list[dict]) -> dict[str, Any]:
    at16 = [run for run in runs if run["clients"] == 16]
    best16 = max(at16, key=lambda run: run["cycles_per_s"], default=None)
    return {
        "benchmark": "vote_throughput",
        "machine_cores": os.cpu_count(),
        "seconds_per_level": args.seconds,
        "insert_baseline": baseline,
        "runs": runs,
        "all_verified": all(run["verify"]["ok"] for run in runs),
        "server_stayed_up": all(run["server_alive"] for run in runs),
        "target": {
            "cycles_per_s_at_16": 500,
            "p99_ms_at_16": 50,
            "met": bool(
                best16
                and best16["cycles_per_s"] >= 500
                and max(best16["latency_ms"][kind].get("p99", 1e9) for kind in ("next", "vote"))
                < 50
            ),
        },
    }


def main() -> int:
    args = parse_args()
    servers = SWEEP if args.sweep else [ServerConfig(args.workers, args.worker_class, args.threads)]
    data_dir = tempfile.mkdtemp(prefix="vote-bench-")
    runs: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    try:
        env = base_env(database_recreate(), data_dir)
        migrate(env)
        django_setup(env)
        baseline = insert_baseline(env["DATABASE_URL"], args.insert_seconds)
        print(f"baseline: {baseline['inserts_per_s']:.0f} single-row INSERTs/s", flush=True)
        for server in servers:
            results, profile = benchmark_server(server, args, env, baseline["inserts_per_s"])
            runs += results
            profiles += [profile] if profile else []
    finally:
        _close_django_connections()
        database_drop()
        shutil.rmtree(data_dir, ignore_errors=True)
    result = summary(args, baseline, runs)
    if profiles:
        result["profile"] = profiles
    print(json.dumps(result))
    return 0 if result["all_verified"] and result["server_stayed_up"] else 1


def _close_django_connections() -> None:
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()


if __name__ == "__main__":
    sys.exit(main())
