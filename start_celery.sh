#!/usr/bin/env bash
# Start the system in the background: Celery worker and beat, the dashboard, and the Keepa
# simulator when KEEPA_API_KEY is unset. Each runs under a small supervisor that restarts it
# after a crash with back-off and gives up loudly after repeated crashes.
#
#   ./start_celery.sh [--timeout SECONDS]      # wait this long for readiness (default 90)
#
# Runs as the current user, with the project's virtualenv only (.venv/bin/python; never the
# system Python). In order, each step stopping with a one-line error:
#   1. the virtualenv exists and has the project's packages      (else: run `make setup`)
#   2. .env and the environment are valid                         (keepa_deals.config)
#   3. a second copy is refused: a pidfile under var/run counts only while its process runs
#      exactly the recorded command line (/proc/PID/cmdline, never `pgrep -f`)
#   4. Redis: REDIS_URL, or the private server under var/redis, started when needed
#   5. the Celery app imports and every scheduled task is registered
#   6. database migrations; the code revision is recorded in var/REVISION
#   7. worker, beat, dashboard (+ simulator) start; each must show it is ready
# Pidfiles: var/run/<name>.pid and <name>.supervisor.pid. Output: var/log/<name>.log, rotated
# at 10 MB with 5 backups. Stop everything with ./kill_everything_force.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python="$root/.venv/bin/python"

die() {
    echo "start_celery.sh: error: $*" >&2
    exit 2
}

if [[ ! -x $python ]]; then
    die "no virtualenv at $root/.venv: run 'make setup' (creates it from requirements.txt)"
fi
if ! problem=$("$python" -c 'import celery, dotenv, flask, redis, requests' 2>&1); then
    die "$python cannot load the project's packages (${problem##*$'\n'}): run 'make setup'"
fi

cd "$root"
exec "$python" -m keepa_deals.ops start "$@"
