"""Keeps pytest-xdist workers apart. Loaded as a plugin (`-p tests.parallel`), so it runs before
pytest-django imports the settings: each worker ("gw0", "gw1", ...) gets its own data directory
and its own Redis database. Their Celery worker processes, broker flushes, generator
checkpoints and media files then never meet; pytest-django already gives each worker its own
test database (test_<name>_gw0, ...). Without xdist this does nothing."""

import os

worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # xdist sets it before loading plugins
if worker.startswith("gw"):
    index = int(worker.removeprefix("gw"))
    if data_dir := os.environ.get("DATA_DIR"):
        os.environ["DATA_DIR"] = os.path.join(data_dir, worker)
        os.makedirs(os.environ["DATA_DIR"], exist_ok=True)
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if broker.startswith("redis://"):
        base, _, database = broker.rpartition("/")
        # Counting down from the configured database (15 in platform/test.sh).
        os.environ["CELERY_BROKER_URL"] = f"{base}/{(int(database or 0) - index) % 16}"
