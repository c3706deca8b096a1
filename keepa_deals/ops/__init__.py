"""Operations: pidfiles, supervised services, start/stop/status and the deploy health gate.

`python -m keepa_deals.ops --help` is what start_celery.sh, kill_everything_force.sh and
deploy_update.sh call; `python -m keepa_deals.runner` runs the same services in the foreground.

Modules: processes (liveness, TERM-then-KILL), pidfile (pid + exact command line), services
(what runs and how it is probed), logsink (child output to a console or rotated file),
supervisor (restart with back-off, give up loudly), control (start/stop/status), gate (health).
"""
