"""What the HTTP benchmarks share: rater accounts with API tokens, a free local port, and
stopping a server started in its own process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess


def raters_create(*, prefix: str, count: int) -> list[str]:
    """`count` rater accounts, bulk-inserted; returns their API tokens (Django set up)."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from ratings.models import Rater, Role

    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"{prefix}-{i}", password="!") for i in range(count)]
    )
    Rater.objects.bulk_create([Rater(user=user, role=Role.RATER) for user in users])
    tokens = Token.objects.bulk_create([Token(key=Token.generate_key(), user=u) for u in users])
    return [token.key for token in tokens]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group it leads, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
