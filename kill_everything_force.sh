#!/usr/bin/env bash
# Stop everything this checkout runs, by pidfile:
#   1. dashboard, beat, worker and simulator (started by start_celery.sh or the runner): TERM
#      first (a Celery worker finishes its current task: warm shutdown), KILL after the timeout.
#      A pidfile counts only while its process runs exactly the recorded command line, so a
#      reused pid or a `tail -f worker.log` is never signalled.
#   2. the locks whose holders are now dead are removed (Diagnostics/force_clear_locks.py);
#      locks of live holders are kept.
#   3. the private Redis (not a REDIS_URL server) stops and saves its data.
# Never FLUSHALL; never deletes Redis dump files, schedules or other state.
#
#   ./kill_everything_force.sh [--timeout SECONDS]    # between TERM and KILL (default 30)
#
# Exit 0 when everything is stopped, 1 when something survived, 2 on bad usage.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python="$root/.venv/bin/python"
timeout=30

die() {
    echo "kill_everything_force.sh: error: $*" >&2
    exit 2
}

while (($#)); do
    case $1 in
        --timeout)
            [[ ${2:-} =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--timeout needs a number of seconds"
            timeout=$2
            shift 2
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

if [[ ! -x $python ]]; then
    die "no virtualenv at $root/.venv: run 'make setup' first"
fi
cd "$root"

result=0
"$python" -m keepa_deals.ops stop --timeout "$timeout" || result=1
if ! "$python" Diagnostics/force_clear_locks.py; then
    echo "kill_everything_force.sh: locks were not checked (see above); leases expire anyway" >&2
fi
"$python" -m keepa_deals.ops stop-redis || result=1
exit "$result"
