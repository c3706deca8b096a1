"""docs/prometheus-alerts.yml: well-formed alerting rules (promtool when installed, else a
structure check), one per incident the collector alerts on, on metrics /metrics exports."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml
from dashboard_helpers import insert_deals, insert_run, synthetic_deals
from prometheus_client.parser import text_string_to_metric_families

from keepa_deals import heartbeats
from keepa_deals.constants import TASK_UPSERT
from keepa_deals.envelope import TokenEnvelope
from keepa_deals.keepa_stats import response_counter
from keepa_deals.tokens import TokenBucket

pytestmark = pytest.mark.timeout(60)
RULES = Path(__file__).resolve().parents[2] / "docs" / "prometheus-alerts.yml"
# The incidents the collector's own alerts name (README, "Alerts and monitoring").
INCIDENTS = {"KeepaDealsNotFlowing", "KeepaDealsTaskStalled", "KeepaDealsKeyRejected",
             "KeepaDealsTokenStarvation", "KeepaDealsRedisDown", "KeepaDealsDatabaseDown",
             "KeepaDealsNoWorkerOrBeat", "KeepaDealsDashboardDown",
             "KeepaDealsAlertDeliveryFailing"}
DURATION = re.compile(r"^\d+[smhd]$")
OUR_METRIC = re.compile(r"\bkeepa_deals_[a-z_]+")


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_incident_has_one_well_formed_rule():
    found = rules()
    assert {rule["alert"] for rule in found} == INCIDENTS
    assert len(found) == len(INCIDENTS)
    for rule in found:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert DURATION.match(rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def promtool(*arguments: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: `make test` installs it (Debian package prometheus)")
    return subprocess.run(["promtool", *arguments], capture_output=True, text=True,
                          timeout=60, check=False, cwd=Path(__file__).parent)


def test_promtool_accepts_the_rules():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rules_fire_on_their_series_and_only_after_their_for():
    tested = promtool("test", "rules", "prometheus_rules_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_metric_the_rules_use_is_exported(dashboard, database, redis_client):
    now = int(time.time())
    insert_deals(database, synthetic_deals(5, now=now))
    insert_run(database, TASK_UPSERT, started_at=now - 3, ended_at=now - 2, outcome="ok")
    heartbeats.worker_heartbeat(redis_client, "w1@test")
    heartbeats.beat_heartbeat(redis_client)
    response_counter(redis_client)("deal", 200)
    TokenBucket(redis_client, refill_period_ms=60_000).sync(TokenEnvelope(
        tokens_left=100, refill_in_ms=30_000, refill_rate=20, tokens_consumed=0,
        timestamp_ms=now * 1000))
    text = requests.get(dashboard + "/metrics", timeout=10).text
    exported = {sample.name for family in text_string_to_metric_families(text)
                for sample in family.samples}
    used = {name for rule in rules() for name in OUR_METRIC.findall(rule["expr"])}
    assert used - exported == set()
