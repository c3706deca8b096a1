#!/usr/bin/env bash
# Deploy the newest commit of the configured branch; return to the previous one if it fails.
#
#   ./deploy_update.sh
#
# Steps: git fetch; fast-forward only (never a merge commit, refused over local changes);
# install requirements.txt into .venv when it changed; pre-flight (the Celery app imports and
# every scheduled task is registered — the running services are not touched before this
# passes); database migrations, after a snapshot of the database when the new revision brings
# migrations (SQLite backup API, var/backups/deals-before-deploy.db); graceful restart (TERM:
# warm shutdown, KILL after a timeout); the revision goes to var/REVISION (services report it)
# and var/log/deploy.log; health gate: the dashboard's /healthz answers 200, a task run of the
# new revision wrote or re-confirmed deals, and none of its runs failed.
# When a step after the fast-forward fails, the previous revision comes back (git reset --hard
# to the recorded commit, reinstall, stop, the database snapshot restored — writes of the failed
# revision are given up: the pipeline reads them from Keepa again — start), deploy.log says why,
# and the exit code is 1.
# Running it again with nothing new and everything healthy changes nothing (no restart).
#
# Environment: DEPLOY_REMOTE, DEPLOY_BRANCH (default: the branch's upstream, else origin and
# the current branch), DEPLOY_HEALTH_TIMEOUT_S (300), DEPLOY_STOP_TIMEOUT_S (60),
# DEPLOY_START_TIMEOUT_S (90).
# Exit: 0 deployed or nothing to do; 1 failed (rolled back when there was something to roll
# back to); 2 refused before changing anything (no venv, local changes, no fast-forward, ...).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python="$root/.venv/bin/python"
health_timeout=${DEPLOY_HEALTH_TIMEOUT_S:-300}
stop_timeout=${DEPLOY_STOP_TIMEOUT_S:-60}
start_timeout=${DEPLOY_START_TIMEOUT_S:-90}
deploy_log=""
deploy_log_max_bytes=1048576
snapshot=""
step_output=""
failure=""
restarted=0

log() {
    local line
    line="$(date -u '+%Y-%m-%dT%H:%M:%SZ') $*"
    echo "$line"
    if [[ -n $deploy_log ]]; then
        echo "$line" >>"$deploy_log"
    fi
}

die() {
    log "deploy refused: $*" >&2
    exit 2
}

# step DESCRIPTION COMMAND...: run it with its output shown; on failure remember why.
step() {
    local description=$1
    shift
    log "$description"
    if "$@" 2>&1 | tee "$step_output"; then
        return 0
    fi
    failure="$description failed: $(tail -n 1 "$step_output")"
    return 1
}

ops() {
    "$python" -m keepa_deals.ops "$@"
}

install_requirements() { # FROM TO: reinstall when requirements.txt differs between them
    if git diff --quiet "$1" "$2" -- requirements.txt; then
        return 0
    fi
    step "installing requirements.txt into .venv" \
        "$python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
}

restart() {
    restarted=1
    step "stopping the services (warm shutdown, KILL after ${stop_timeout}s)" \
        ops stop --timeout "$stop_timeout" &&
        step "starting the services" ops start --timeout "$start_timeout"
}

deploy() { # PREVIOUS TARGET SINCE
    install_requirements "$1" "$2" &&
        step "pre-flight: Celery app and task registration" ops preflight &&
        step "database migrations (a snapshot first when the schema changes)" \
            ops migrate --snapshot "$snapshot" &&
        restart &&
        log "running revision ${2:0:12}" &&
        step "health gate (up to ${health_timeout}s)" \
            ops gate "$2" --since "$3" --timeout "$health_timeout"
}

rollback() { # PREVIOUS TARGET
    log "ROLLING BACK to ${1:0:12}: revision ${2:0:12} failed: $failure"
    if ! git reset --hard --quiet "$1"; then
        log "ROLLBACK INCOMPLETE: git reset --hard ${1:0:12} failed — restore it by hand"
        exit 1
    fi
    if ! install_requirements "$2" "$1"; then
        log "ROLLBACK INCOMPLETE: $failure — fix .venv, then run ./start_celery.sh"
        exit 1
    fi
    if [[ -f $snapshot ]] || ((restarted)); then
        if ! step "stopping the services" ops stop --timeout "$stop_timeout"; then
            log "ROLLBACK INCOMPLETE: $failure — see var/log, then run ./start_celery.sh"
            exit 1
        fi
        if [[ -f $snapshot ]] && ! step "restoring the database as it was before ${2:0:12}" \
            ops restore-snapshot "$snapshot"; then
            log "ROLLBACK INCOMPLETE: $failure — restore $snapshot by hand" \
                "(ops restore-snapshot), then run ./start_celery.sh"
            exit 1
        fi
        if ! step "starting the services" ops start --timeout "$start_timeout"; then
            log "ROLLBACK INCOMPLETE: $failure — see var/log, then run ./start_celery.sh"
            exit 1
        fi
    fi
    log "rolled back: revision ${1:0:12} is running again; ${2:0:12} was NOT deployed"
    exit 1
}

main() {
    if [[ ${1:-} == -h || ${1:-} == --help ]]; then
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
    fi
    (($# == 0)) || die "unexpected argument '$1' (see --help)"
    [[ -x $python ]] || die "no virtualenv at $root/.venv: run 'make setup' first"
    cd "$root"
    local var_dir upstream remote branch previous target since
    var_dir=$(ops var-dir) || die "the configuration is invalid (see above)"
    mkdir -p "$var_dir/log" "$var_dir/run"
    deploy_log="$var_dir/log/deploy.log"
    if [[ -f $deploy_log ]] && (($(stat -c %s "$deploy_log") > deploy_log_max_bytes)); then
        mv -f "$deploy_log" "$deploy_log.1" # one older log kept: bounded
    fi
    snapshot="$var_dir/backups/deals-before-deploy.db"
    exec 9>"$var_dir/run/deploy.lock"
    flock -n 9 || die "another deploy is running"
    step_output=$(mktemp)
    trap 'rm -f "$step_output"' EXIT

    git diff --quiet HEAD -- ||
        die "tracked files have local changes (a rollback would lose them): commit or discard"
    upstream=$(git rev-parse --abbrev-ref --symbolic-full-name '@{upstream}' 2>/dev/null) ||
        upstream=""
    remote=${DEPLOY_REMOTE:-${upstream%%/*}}
    remote=${remote:-origin}
    branch=${DEPLOY_BRANCH:-${upstream#*/}}
    branch=${branch:-$(git symbolic-ref --quiet --short HEAD)} ||
        die "detached HEAD: set DEPLOY_BRANCH"
    previous=$(git rev-parse HEAD)
    since=$(date +%s)
    git fetch --quiet "$remote" "$branch" || die "git fetch $remote $branch failed"
    target=$(git rev-parse FETCH_HEAD)

    if [[ $target == "$previous" ]]; then
        if ops healthy "$previous"; then
            log "revision ${previous:0:12} is deployed and healthy: nothing to do"
            exit 0
        fi
        log "revision ${previous:0:12} is current but not healthy: restarting it"
        if restart && step "health gate (up to ${health_timeout}s)" \
            ops gate "$previous" --since "$since" --timeout "$health_timeout"; then
            log "revision ${previous:0:12} is healthy again"
            exit 0
        fi
        log "FAILED: $failure (revision unchanged: nothing to roll back to)"
        exit 1
    fi
    git merge-base --is-ancestor "$previous" "$target" ||
        die "$remote/$branch (${target:0:12}) is not a fast-forward of ${previous:0:12}"
    log "deploying ${target:0:12} from $remote/$branch (previous ${previous:0:12})"
    git merge --ff-only --quiet "$target"
    deploy "$previous" "$target" "$since" || rollback "$previous" "$target"
    log "deployed ${target:0:12}: healthy"
}

# Everything above is read before anything runs, so a deploy that rewrites this file cannot
# change the script while it executes.
main "$@"
exit 0
