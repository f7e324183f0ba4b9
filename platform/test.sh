#!/usr/bin/env bash
# Run the whole test suite against the real services: PostgreSQL, Redis, a Celery worker
# process and headless Chromium. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source platform/bootstrap.sh test

export SECRET_KEY="${SECRET_KEY:-test-only-secret-key}"
export DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/musicpref}"
export CELERY_BROKER_URL="${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/15}"
export DATA_DIR="$(mktemp -d -t musicpref-test-XXXXXX)"
export TEST_ARTIFACTS_DIR="${TEST_ARTIFACTS_DIR:-$PWD/test-artifacts}"
mkdir -p "$TEST_ARTIFACTS_DIR"
trap 'rm -rf "$DATA_DIR"' EXIT

echo "==> ruff"
ruff check .
ruff format --check .
echo "==> pytest"
# Two processes on the two cores; whole files stay on one process (module-scoped browser
# fixtures), and tests/parallel.py gives each its own database, Redis database and data dir.
# --durations: the 15 slowest tests, so a run that creeps towards the 10-minute budget says why.
python -m pytest -n 2 --dist loadfile --durations=15 "$@"
