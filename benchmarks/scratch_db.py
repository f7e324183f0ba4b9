"""The benchmarks' scratch PostgreSQL databases: created for a run, dropped after it or kept
for `--reuse`. Only databases whose name starts with the benchmark's own prefix are ever
dropped, so a mistyped URL cannot take a real database with it."""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg
from psycopg import sql


def _server_and_name(url: str, prefix: str) -> tuple[str, str]:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.startswith(prefix):
        raise SystemExit(f"refusing to drop a database not named {prefix}*")
    return parts._replace(path="/postgres").geturl(), name


def database_create(url: str, *, prefix: str, reuse: bool = False) -> bool:
    """Create the database (dropping an old one unless reused); True if it existed."""
    server, name = _server_and_name(url, prefix)
    with psycopg.connect(server, autocommit=True) as conn:
        exists = bool(
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        )
        if exists and not reuse:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            exists = False
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return exists


def database_drop(url: str, *, prefix: str) -> None:
    server, name = _server_and_name(url, prefix)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
