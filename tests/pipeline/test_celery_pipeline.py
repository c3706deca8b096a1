"""End to end: real `celery worker` and `celery beat` processes, Redis, simulator and SQLite.

Each test starts its own simulator (small catalogue, fast refill clock), a worker and a beat with
1 s intervals, and polls the SQLite file with deadlines. Exactness is checked with the
simulator's clock frozen, so its ground truth (`/_sim/deals/truth`) stands still.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter

import pytest
from pipeline_helpers import (
    KEEPA_MINUTE_MS,
    LOOSE_QUERY,
    MINUTE_MS,
    PROJECT_ROOT,
    enriched_count,
    enrichment_lag,
    frozen_sim,
    product_batches,
    runs,
    sim_config,
    state,
    stored_deals,
    truth_deals,
    wait_for_worker,
)
from support import wait_until

from keepa_deals.backfiller import CURSOR_STATE
from keepa_deals.heartbeats import read_beat, read_workers
from keepa_deals.keepa_time import keepa_minute_to_unix

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def start_pipeline(start_celery, env, redis_url, *, beat=True):
    worker = start_celery("worker", env)
    wait_for_worker(redis_url)
    beat_process = start_celery("beat", env) if beat else None
    return worker, beat_process


def sweeps_done(database) -> int:
    cursor = state(database, CURSOR_STATE)
    return 0 if cursor is None else cursor["sweep_id"] - 1


def test_first_sweep_from_an_empty_database_equals_the_ground_truth(
        sim_factory, pipeline_env, start_celery, redis_server, redis_client, tmp_path):
    sim = frozen_sim(sim_factory)
    env = pipeline_env(sim)
    worker, beat = start_pipeline(start_celery, env, redis_server.url)
    database = tmp_path / "deals.db"
    wait_until(lambda: sweeps_done(database) >= 1, 60, "the first full sweep")
    wait_until(lambda: any(r["outcome"] == "ok" for r in runs(database, "backfill_deals")), 60,
               "the backfill run that finished the sweep to enrich and end")

    truth = truth_deals(sim, LOOSE_QUERY)
    assert len(truth) > 150, "the query spans several pages"
    assert stored_deals(database) == truth  # same ASINs, same lastUpdate, no duplicates
    revision = read_workers(redis_client)[0]["revision"]  # git HEAD when the worker started
    assert re.fullmatch(r"[0-9a-f]{40}", revision)
    backfill_runs = [r for r in runs(database, "backfill_deals") if r["outcome"] != "running"]
    assert backfill_runs and all(r["revision"] == revision for r in backfill_runs)
    assert {r["outcome"] for r in backfill_runs} <= {"ok", "partial", "skipped"}
    assert re.fullmatch(r"[0-9a-f]{40}", read_beat(redis_client)["revision"])
    assert worker.alive() and beat.alive()


def test_new_deals_reach_sqlite_within_two_upserter_intervals_while_the_backfill_is_busy(
        sim_factory, pipeline_env, start_celery, redis_server, redis_client, tmp_path):
    upsert_interval = 3
    # ~1 150 deals at 20 tokens per 250 ms tick: a sweep takes the backfill ~15 s of tokens.
    sim = sim_factory(**sim_config(catalogue={"n_products": 3000},
                                   keys={sim_key(): {"refill_rate": 20, "initial_tokens": 0}}))
    env = pipeline_env(sim, UPSERT_INTERVAL_S=upsert_interval, TASK_SLICE_S=20)
    start_pipeline(start_celery, env, redis_server.url)
    database = tmp_path / "deals.db"
    backfill_lock = "kd:lock:backfill_deals_lock"
    wait_until(lambda: redis_client.exists(backfill_lock) and len(stored_deals(database)) > 20, 60,
               "the backfill to be under way")

    before = sim.state()["clock"]["keepa_minute"]
    sim.clock(advance_ms=15 * KEEPA_MINUTE_MS)
    appeared_at = time.monotonic()
    new = {a: t for a, t in truth_deals(sim, LOOSE_QUERY).items()
           if t > keepa_minute_to_unix(before)}
    assert new, "advancing the clock produced new deals"

    def all_new_stored():
        stored = stored_deals(database)
        return all(stored.get(asin, 0) >= t for asin, t in new.items())

    wait_until(all_new_stored, 2 * upsert_interval + 1, f"{len(new)} new deals in SQLite")
    assert time.monotonic() - appeared_at <= 2 * upsert_interval + 1


def test_worker_killed_mid_batch_resumes_with_at_most_one_batch_fetched_twice(
        sim_factory, pipeline_env, start_celery, redis_server, redis_client, tmp_path):
    sim = frozen_sim(sim_factory, default_refill_rate=20,
                     keys={sim_key(): {"initial_tokens": 20_000}},
                     latency={"per_endpoint": {"product": 300}})
    env = pipeline_env(sim, UPSERT_INTERVAL_S=3600, BACKFILL_INTERVAL_S=4)
    worker, _ = start_pipeline(start_celery, env, redis_server.url)
    database = tmp_path / "deals.db"
    wait_until(lambda: enriched_count(database) >= 40, 60, "a few committed batches")
    worker.kill()
    assert enrichment_lag(database), "killed before the enrichment was done"
    start_celery("worker", env)
    wait_until(lambda: sweeps_done(database) >= 1 and not enrichment_lag(database), 60,
               "the sweep and its enrichment to finish after the restart", interval=0.05)
    batches = product_batches(sim)

    truth = truth_deals(sim, LOOSE_QUERY)
    assert stored_deals(database) == truth
    counts = Counter(asin for batch in batches for asin in batch)
    assert set(counts) == set(truth)
    twice = {asin for asin, n in counts.items() if n > 1}
    assert all(counts[a] == 2 for a in twice)
    assert any(twice <= set(batch) for batch in batches), f"refetched beyond one batch: {twice}"


def test_faults_429_window_and_rate_change_still_give_the_exact_end_state(
        sim_factory, pipeline_env, start_celery, redis_server, redis_client, tmp_path):
    # A frozen clock never refills: the key starts with enough tokens for the whole test.
    # Slow /product answers: the enrichment (one pass, nothing changes later) spans the changes.
    sim = frozen_sim(sim_factory, default_refill_rate=40,
                     keys={sim_key(): {"initial_tokens": 50_000}},
                     latency={"per_endpoint": {"product": 300}},
                     faults={"http_5xx": {"p": 0.05}, "malformed_json": {"p": 0.02}})
    env = pipeline_env(sim)
    worker, beat = start_pipeline(start_celery, env, redis_server.url)
    database = tmp_path / "deals.db"
    wait_until(lambda: any(len(b) == 40 for b in product_batches(sim)), 60,
               "a /product batch of one refill tick (40)")

    sim.config({"faults": {"forced_429": {"windows": [{"from_s": 0, "to_s": 60}]}}})
    wait_until(lambda: any(e["status"] == 429 for e in sim.requests_log()), 20, "429 answers")
    sim.tokens(refill_rate=25)
    sim.clock(advance_ms=MINUTE_MS * 2)  # the 429 window (one tick) is over, same Keepa minute
    sim.tokens(tokens=50_000)  # the rate cut clipped the balance to the new ceiling
    changed_at = max(e["id"] for e in sim.requests_log())
    sweep = sweeps_done(database)
    wait_until(lambda: sweeps_done(database) >= sweep + 2 and not enrichment_lag(database), 60,
               "a full sweep and the enrichment done after the faults")

    assert stored_deals(database) == truth_deals(sim, LOOSE_QUERY)
    assert any(sim.state()["faults_fired"].values()), "faults were injected"
    products = [e for e in sim.requests_log() if e["path"].strip("/") == "product"]
    planned_before = {e["params"]["asin"] for e in products if e["id"] <= changed_at + 5}
    later = [e for e in products if e["id"] > changed_at + 5  # retries of older batches aside
             and e["params"]["asin"] not in planned_before]
    assert later and all(len(e["params"]["asin"].split(",")) <= 25 for e in later), \
        "batches follow the new refill rate"
    assert max(len(b) for b in product_batches(sim)) == 40, "batches followed the first rate"
    assert worker.alive() and beat.alive()


def test_redis_restart_mid_run_gives_the_exact_end_state_without_a_crash_loop(
        sim_factory, pipeline_env, start_celery, redis_server, redis_client, tmp_path):
    sim = frozen_sim(sim_factory, default_refill_rate=20,
                     keys={sim_key(): {"initial_tokens": 20_000}},
                     latency={"per_endpoint": {"product": 150}})
    env = pipeline_env(sim)
    worker, beat = start_pipeline(start_celery, env, redis_server.url)
    database = tmp_path / "deals.db"
    wait_until(lambda: enriched_count(database) >= 20, 60, "the backfill mid-enrichment")

    restarted_at = time.time()
    redis_server.restart(keep_data=False)
    wait_until(lambda: sweeps_done(database) >= 1 and not enrichment_lag(database), 90,
               "the sweep and its enrichment to finish after the restart")
    assert stored_deals(database) == truth_deals(sim, LOOSE_QUERY)
    wait_until(lambda: any(r["outcome"] == "ok" and r["started_at"] > restarted_at
                           for r in runs(database, "update_recent_deals")), 30,
               "an upserter run succeeding after the restart")
    assert worker.alive() and beat.alive(), "no crash (loop) after the Redis restart"
    wait_until(lambda: read_beat(redis_client), 30, "the beat heartbeat back in the new Redis")
    assert worker.log().count("Traceback") <= 2


def test_a_second_beat_refuses_to_start_naming_the_holder(
        sim, pipeline_env, start_celery, redis_client, tmp_path):
    env = pipeline_env(sim)
    schedule_file = tmp_path / "beat-schedule"
    first = start_celery("beat", env, "--schedule", str(schedule_file))
    wait_until(lambda: read_beat(redis_client), 30, "the first beat's heartbeat")
    second = start_celery("beat", env, "--schedule", str(schedule_file))
    code = second.process.wait(timeout=30)
    assert code != 0
    assert f"held by pid {first.process.pid}" in second.log()
    assert first.alive()
    assert not list(tmp_path.glob("beat-schedule*")), "no schedule file that could corrupt"


def test_check_command_lists_the_registered_scheduled_tasks(sim, pipeline_env):
    completed = subprocess.run([sys.executable, "-m", "keepa_deals.celery_app", "check"],
                               cwd=PROJECT_ROOT, env=pipeline_env(sim), capture_output=True,
                               text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    for task in ("keepa_deals.backfiller.backfill_deals",
                 "keepa_deals.simple_task.update_recent_deals",
                 "keepa_deals.janitor.remove_stale_deals"):
        assert task in completed.stdout


def sim_key() -> str:
    from keepa_sim import DEFAULT_API_KEY

    return DEFAULT_API_KEY


def test_check_command_names_unimportable_modules_and_unregistered_tasks(sim, pipeline_env):
    script = (
        "import sys\n"
        "from keepa_deals.celery_app import TASK_MODULES, app, main, make_celery\n"
        "broken = make_celery(app.pipeline_settings, broker_url=app.conf.broker_url,\n"
        "                     include=(*TASK_MODULES, 'keepa_deals.no_such_tasks'))\n"
        "broken.conf.beat_schedule['ghost'] = {'task': 'keepa_deals.ghost.run', 'schedule': 5}\n"
        "sys.exit(main(['check'], broken))\n")
    completed = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT,
                               env=pipeline_env(sim), capture_output=True, text=True,
                               timeout=60, check=False)
    assert completed.returncode == 1
    assert "keepa_deals.no_such_tasks cannot be imported" in completed.stderr
    assert "keepa_deals.ghost.run is not registered" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("kind", ["worker", "beat"])
def test_worker_and_beat_refuse_to_start_when_a_task_module_cannot_be_imported(
        sim, pipeline_env, tmp_path, kind):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(  # makes `import keepa_deals.janitor_task` fail
        "import sys\nsys.modules['keepa_deals.janitor_task'] = None\n")
    env = pipeline_env(sim, PYTHONPATH=f"{shim}{os.pathsep}{PROJECT_ROOT}")
    completed = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "keepa_deals.celery_app", kind],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0
    assert "keepa_deals.janitor_task cannot be imported" in output
    assert "keepa_deals.janitor.remove_stale_deals is not registered" in output
    assert "Traceback" not in output


def test_broker_and_schedule_settings_keep_their_invariants(sim, pipeline_env):
    script = (
        "import json\n"
        "from keepa_deals.celery_app import app, time_limits\n"
        "c = app.conf\n"
        "print(json.dumps({'limits': time_limits(app.pipeline_settings),\n"
        "  'options': c.broker_transport_options, 'acks_late': c.task_acks_late,\n"
        "  'prefetch': c.worker_prefetch_multiplier, 'soft': c.task_soft_time_limit,\n"
        "  'hard': c.task_time_limit, 'slice': app.pipeline_settings.task_slice_s,\n"
        "  'schedule': {n: [e['task'], e['schedule'], e['options']['expires']]\n"
        "               for n, e in c.beat_schedule.items()}}))\n")
    completed = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT,
                               env=pipeline_env(sim, TASK_SLICE_S=240, UPSERT_INTERVAL_S=60),
                               capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    conf = json.loads(completed.stdout)
    soft, hard, visibility = conf["limits"]
    assert conf["slice"] < soft == conf["soft"] < hard == conf["hard"] < visibility
    assert conf["options"] == {"global_keyprefix": "celery:", "visibility_timeout": visibility}
    assert conf["acks_late"] is True and conf["prefetch"] == 1
    schedule = {task: (interval, expires) for task, interval, expires
                in conf["schedule"].values()}
    assert schedule["keepa_deals.simple_task.update_recent_deals"] == (60, 60)
    assert set(schedule) == {"keepa_deals.backfiller.backfill_deals",
                             "keepa_deals.simple_task.update_recent_deals",
                             "keepa_deals.janitor.remove_stale_deals",
                             "keepa_deals.alerting.check_alerts"}
    assert schedule["keepa_deals.alerting.check_alerts"] == (30, 30), "ALERT_CHECK_S"


def test_beat_waits_out_a_redis_outage_quietly_and_carries_on(
        sim, pipeline_env, start_celery, redis_server, redis_client):
    beat = start_celery("beat", pipeline_env(sim))
    wait_until(lambda: read_beat(redis_client), 30, "the beat's heartbeat")
    redis_server.stop(save=True)
    try:
        wait_until(lambda: "beat: Redis unavailable" in beat.log(), 20, "the outage noticed")
        outage_started = time.monotonic()
        wait_until(lambda: time.monotonic() - outage_started > 3, 10, "three seconds of outage")
    finally:
        redis_server.start()
    wait_until(lambda: "beat: Redis is back" in beat.log(), 30, "the beat to see Redis back")
    assert beat.alive()
    assert beat.log().count("Redis unavailable") == 1, "logged once, not once per attempt"
    redis_client.delete("kd:hb:beat")
    wait_until(lambda: read_beat(redis_client), 30, "the beat's heartbeat after the outage")
