#!/usr/bin/env bash
# Run the whole platform on embedded defaults (SQLite, a folder as the task broker, media on
# local disk): migrate, seed a demo, start a Celery worker and gunicorn, print the URL.
# Every default can be overridden from the environment (see platform/env.example).
set -euo pipefail
cd "$(dirname "$0")/.."
source platform/bootstrap.sh run

export DATA_DIR="${DATA_DIR:-$PWD/data}"
mkdir -p "$DATA_DIR"
if [ -z "${SECRET_KEY:-}" ]; then
  [ -f "$DATA_DIR/secret_key" ] || python -c 'import secrets; print(secrets.token_urlsafe(50))' > "$DATA_DIR/secret_key"
  export SECRET_KEY="$(cat "$DATA_DIR/secret_key")"
fi
export PORT="${PORT:-8000}"
export HOST="${HOST:-127.0.0.1}"

python manage.py migrate --noinput -v0
python manage.py collectstatic --noinput -v0

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

celery -A config worker --beat --queues generate,train,default --concurrency 1 \
  --loglevel INFO --logfile "$DATA_DIR/worker.log" --schedule "$DATA_DIR/celerybeat-schedule" &
pids+=($!)
echo "==> Demo users (saved in $DATA_DIR/demo-credentials.json):"
python manage.py seed_demo
gunicorn --config platform/gunicorn.conf.py config.wsgi &
pids+=($!)

python - <<PY
import time, urllib.request
for _ in range(120):
    try:
        urllib.request.urlopen("http://$HOST:$PORT/healthz", timeout=1)
        break
    except OSError:
        time.sleep(0.5)
PY
echo
echo "==> The platform is running at http://$HOST:$PORT/  (worker log: $DATA_DIR/worker.log)"
echo "    Log in as 'rater' to vote, as 'admin' to watch campaigns at /manage/campaigns/."
echo "    Press Ctrl-C to stop."
wait -n "${pids[@]}"
