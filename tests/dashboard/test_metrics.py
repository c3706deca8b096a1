"""/metrics: Prometheus text that parses, with figures read from the database and Redis (the
deal gauge equals the table's count), behind the dashboard password when one is set."""

from __future__ import annotations

import time

import pytest
import requests
from dashboard_helpers import insert_deals, insert_run, synthetic_deals
from prometheus_client.parser import text_string_to_metric_families

from keepa_deals import db, heartbeats
from keepa_deals.constants import TASK_BACKFILL, TASK_UPSERT
from keepa_deals.dashboard import create_app
from keepa_deals.keepa_stats import response_counter

pytestmark = pytest.mark.timeout(30)


def scrape(url: str, **kwargs) -> dict[tuple[str, tuple], float]:
    response = requests.get(url + "/metrics", timeout=10, **kwargs)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def test_metrics_parse_and_hold_the_tables_figures(dashboard, database, redis_client):
    now = int(time.time())
    insert_deals(database, synthetic_deals(57, now=now))
    insert_run(database, TASK_UPSERT, started_at=now - 12, ended_at=now - 10, outcome="ok",
               deals_written=7, tokens_spent=15)
    insert_run(database, TASK_BACKFILL, started_at=now - 9, ended_at=now - 8,
               outcome="failed", deals_written=0, tokens_spent=3, error="TransientError: 502")
    heartbeats.worker_heartbeat(redis_client, "w1@test")
    count = response_counter(redis_client)
    for status in (200, 200, 429, None):
        count("deal", status)

    samples = scrape(dashboard)
    assert samples[("keepa_deals_deals", ())] == db.deal_count(database) == 57
    assert samples[("keepa_deals_deals_written_total", (("task", TASK_UPSERT),))] == 7
    assert samples[("keepa_deals_tokens_spent_total", (("task", TASK_BACKFILL),))] == 3
    assert samples[("keepa_deals_runs_total",
                    (("outcome", "failed"), ("task", TASK_BACKFILL)))] == 1
    assert samples[("keepa_deals_keepa_responses_total",
                    (("endpoint", "deal"), ("status", "200")))] == 2
    assert samples[("keepa_deals_keepa_responses_total",
                    (("endpoint", "deal"), ("status", "429")))] == 1
    assert samples[("keepa_deals_keepa_responses_total",
                    (("endpoint", "deal"), ("status", "none")))] == 1
    since_ok = samples[("keepa_deals_seconds_since_last_ok_run", (("task", TASK_UPSERT),))]
    assert 9 <= since_ok <= 30
    assert samples[("keepa_deals_redis_up", ())] == 1
    assert samples[("keepa_deals_worker_heartbeat_age_seconds", (("worker", "w1@test"),))] < 30
    states = {labels: v for (name, labels), v in samples.items()
              if name == "keepa_deals_task_state" and dict(labels)["task"] == TASK_UPSERT}
    assert sum(states.values()) == 1, "one state at a time"
    assert sum(v for (name, _), v in samples.items() if name == "keepa_deals_status") == 1

    insert_deals(database, synthetic_deals(3, now=now, start=1000))
    assert scrape(dashboard)[("keepa_deals_deals", ())] == 60, "read at scrape time"


def test_metrics_are_behind_the_dashboard_password(make_settings, database, serve):
    url = serve(create_app(make_settings(DASHBOARD_PASSWORD="pw-for-metrics")))
    assert requests.get(url + "/metrics", timeout=10).status_code == 401
    samples = scrape(url, auth=("admin", "pw-for-metrics"))
    assert ("keepa_deals_up", ()) in samples
