"""A snapshot of 200,000 votes streams: the export's memory stays flat however many rows it
writes. (Speed is measured by benchmarks/export.py, not asserted here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest
from django.conf import settings
from django.db import connection

from benchmarks.export import seed_votes

VOTES = 200_000
# Django, pyarrow and numpy alone take ~120 MB; holding the rows would take several times the
# ceiling (the JSONL alone is over 100 MB).
PEAK_RSS_CEILING_MB = 400

CHILD = """
import json, re
import django
django.setup()
from ratings.dataset import DataFilters
from ratings.snapshots import snapshot_build, snapshot_create

def peak_kb():
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would include the (large) pytest
    # process this one was forked from.
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1))

before = peak_kb()
snapshot = snapshot_create(filters=DataFilters(), formats=["parquet", "jsonl"], queue=False)
snapshot = snapshot_build(snapshot_id=snapshot.pk)
print(json.dumps({
    "status": snapshot.status, "error": snapshot.error, "rows": snapshot.row_counts,
    "directory": str(snapshot.directory), "before_kb": before, "peak_kb": peak_kb(),
}))
"""


@pytest.mark.django_db(transaction=True)
def test_a_large_export_streams_in_bounded_memory(tmp_path: Path) -> None:
    assert seed_votes(pairs=VOTES // 1000, raters=1000) == VOTES
    db = connection.settings_dict  # the test database, which the child must use too
    credentials = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    env = os.environ | {
        "DATABASE_URL": f"postgres://{credentials}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
        "SNAPSHOT_DIR": str(tmp_path / "snapshots"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }

    # A process of its own, so that its peak RSS is the export's and nothing else's.
    done = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=settings.BASE_DIR, env=env, capture_output=True,
        text=True, timeout=300, check=True,
    )  # fmt: skip

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "finished", result["error"]
    assert result["rows"] == {
        "votes": VOTES,
        "ratings": 2 * VOTES // 10,
        "tracks": 2 * VOTES // 1000,
    }
    peak_mb = result["peak_kb"] / 1024
    assert peak_mb < PEAK_RSS_CEILING_MB, f"peak RSS {peak_mb:.0f} MB"
    directory = Path(result["directory"])
    assert pq.read_metadata(directory / "votes.parquet").num_rows == VOTES
    with (directory / "votes.jsonl").open() as file:
        assert sum(1 for _ in file) == VOTES
