"""Security: escaped Keepa text, 400 for bad parameters, no secret in any answer, safe binding,
and pages that still render (saying so) while Redis or the database is down."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from dashboard_helpers import deal_row, insert_deals, insert_run

from keepa_deals.constants import TASK_UPSERT
from keepa_deals.dashboard import create_app
from keepa_deals.redis_server import free_port
from keepa_deals.web.auth import UnsafeBindError

pytestmark = pytest.mark.timeout(60)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
XSS_TITLE = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
XSS_CATEGORY = "<b onmouseover=alert(1)>Toys</b>"
XSS_ERROR = 'TransientError: <img src=x onerror="window.__xss = 3">'
# What injected markup would add to the DOM: the pages have no inline script of their own (the
# overview's status is an inert application/json block) and no inline event handler.
INJECTED_ELEMENTS = ("script:not([src]):not([type='application/json']), img[src=x], [onerror], "
                     "[onmouseover], b")
KEY = "Zq7" + "x" * 58 + "K3y"  # a well-formed 64-character Keepa key
REDIS_PASSWORD = "hunter2-redis-pass"


@pytest.mark.browser
def test_xss_payloads_in_keepa_text_render_as_text(dashboard, database, page, screenshot):
    """Keepa text is shown literally and adds no element or handler to the DOM. (The CSP stops
    an injected inline script from running, so a flag it would set proves nothing.)"""
    now = int(time.time())
    insert_deals(database, [deal_row("B0XSS00001", now=now, title=XSS_TITLE,
                                     category_name=XSS_CATEGORY)])
    insert_run(database, TASK_UPSERT, started_at=now - 5, outcome="failed", error=XSS_ERROR)
    for path in ("/deals", "/deals/B0XSS00001", "/", "/deals?category=%3Cb%3E"):
        page.goto(dashboard + path)
        page.wait_for_load_state("load")
        assert page.locator(INJECTED_ELEMENTS).count() == 0, path
    page.goto(dashboard + "/deals")
    assert page.locator("a.deal-title").inner_text() == XSS_TITLE
    assert page.locator("#deals-table td[data-label=Category]").inner_text() == XSS_CATEGORY
    page.goto(dashboard + "/deals/B0XSS00001")
    assert page.locator("#deal-title").inner_text() == XSS_TITLE
    screenshot("deal-detail-xss")
    page.goto(dashboard + "/")
    assert XSS_ERROR in page.locator("#overview").inner_text()


# (payload, how Jinja's autoescaping writes it): each one alone in a title, a search and a run error
HTML_PAYLOADS = [
    ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ('"><img src=x onerror=alert(1)>', "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"),
]
ESCAPED_PAGES = ["/deals", "/deals/B0XSS00002", "/deals?q={quoted}", "/"]


@pytest.mark.parametrize("path", ESCAPED_PAGES)
@pytest.mark.parametrize(("payload", "escaped"), HTML_PAYLOADS, ids=["script", "attribute"])
def test_keepa_text_is_escaped_in_the_html_itself(settings, database, path, payload, escaped):
    """Without a browser or the CSP: the server's HTML holds the escaped text, never the markup
    (titles on /deals and the detail page, the search box, run errors on the overview)."""
    now = int(time.time())
    insert_deals(database, [deal_row("B0XSS00002", now=now, title=f"Kettle {payload} deluxe")])
    insert_run(database, TASK_UPSERT, started_at=now - 5, outcome="failed",
               error=f"TransientError: {payload}")
    client = create_app(settings).test_client()
    response = client.get(path.format(quoted=quote(payload)))
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html[:300]
    assert payload not in html
    assert "<script>alert" not in html and "<img src=x" not in html
    assert escaped in html


BAD_REQUESTS = [
    ("/deals?sort=title;DROP TABLE deals", "sort"),
    ("/deals?dir=up", "dir"),
    ("/deals?page=0", "page"),
    ("/deals?page=-1", "page"),
    ("/deals?page=abc", "page"),
    ("/deals?page=99999999999999999999", "page"),
    ("/deals?per_page=7", "per_page"),
    ("/deals?min_price=abc", "min_price"),
    ("/deals?min_price=1e3", "min_price"),
    ("/deals?max_price=NaN", "max_price"),
    ("/deals?min_price=20&max_price=10", "min_price"),
    ("/deals?min_drop=101", "min_drop"),
    ("/deals?min_drop=5.5", "min_drop"),
    ("/deals?min_rank=-3", "min_rank"),
    ("/deals?min_rank=9&max_rank=2", "min_rank"),
    ("/deals?q=" + "x" * 201, "q"),
    ("/deals?q=%00", "q"),
    ("/deals?category=%07", "category"),
    ("/deals.csv?sort=nope", "sort"),
    ("/api/deals?min_drop=x", "min_drop"),
    ("/deals/not-an-asin", "asin"),
    ("/deals/%3Cscript%3E", "asin"),
]


@pytest.mark.parametrize(("path", "parameter"), BAD_REQUESTS)
def test_bad_parameters_get_400_naming_the_parameter(dashboard, database, path, parameter):
    response = requests.get(dashboard + path, timeout=10)
    assert response.status_code == 400, response.text[:300]
    if path.startswith("/api/"):
        assert response.json()["error"].startswith(parameter)
    else:
        assert f"{parameter}:" in response.text or f"{parameter} (" in response.text
        assert "<script>" not in response.text


def test_no_answer_contains_the_keepa_key_or_a_password(make_settings, database, serve):
    settings = make_settings(KEEPA_API_KEY=KEY, DASHBOARD_PASSWORD="dash-password-1",
                             REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0")
    now = int(time.time())
    insert_deals(database, [deal_row("B0KEY00001", now=now, title=f"leaked {KEY} title")])
    insert_run(database, TASK_UPSERT, started_at=now - 5, outcome="failed",
               error=f"TransientError: GET https://api.keepa.com/deal?key={KEY}&page=0 failed")
    base = serve(create_app(settings))
    auth = ("admin", "dash-password-1")
    paths = ["/", "/deals", "/deals/B0KEY00001", "/deals.csv", "/api/status", "/api/deals",
             "/api/deal-count", "/healthz", "/nope", "/deals?page=x", "/static/overview.js"]
    for path in paths:
        response = requests.get(base + path, auth=auth, timeout=10)
        assert response.status_code != 401, path
        for secret in (KEY, REDIS_PASSWORD, "dash-password-1"):
            assert secret not in response.text, f"{path} shows a secret"
    status = requests.get(base + "/api/status", auth=auth, timeout=10).json()
    assert "key=***" in status["recent_runs"][0]["error"]


def test_a_non_local_bind_without_a_password_refuses_to_start(make_settings, tmp_path):
    with pytest.raises(UnsafeBindError, match="DASHBOARD_PASSWORD"):
        create_app(make_settings(DASHBOARD_HOST="0.0.0.0"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "DASHBOARD_HOST": "0.0.0.0",
           "DASHBOARD_PORT": str(port), "DATABASE_PATH": str(tmp_path / "d.db"),
           "VAR_DIR": str(tmp_path / "var"), "DASHBOARD_PASSWORD": ""}  # wins over a .env
    result = subprocess.run([sys.executable, "-m", "keepa_deals.dashboard"], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 2
    assert "DASHBOARD_PASSWORD" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_a_password_protects_every_page_but_healthz(make_settings, database, serve):
    base = serve(create_app(make_settings(DASHBOARD_HOST="0.0.0.0",
                                          DASHBOARD_PASSWORD="s3cret-pw")))
    for path in ("/", "/deals", "/deals.csv", "/api/status", "/api/deal-count"):
        assert requests.get(base + path, timeout=10).status_code == 401, path
        assert requests.get(base + path, auth=("x", "wrong"), timeout=10).status_code == 401
        assert requests.get(base + path, auth=("x", "s3cret-pw"), timeout=10).status_code == 200
    assert requests.get(base + "/healthz", timeout=10).status_code == 503  # open, not 401


@pytest.mark.browser
def test_pages_render_and_say_so_when_redis_and_the_database_are_down(make_settings, serve,
                                                                      tmp_path, page,
                                                                      screenshot):
    settings = make_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                             DATABASE_PATH=str(tmp_path / "missing" / "deals.db"))
    base = serve(create_app(settings))
    page.goto(base + "/")
    assert "Redis unreachable" in page.locator("#redis-error").inner_text()
    assert "Database unavailable" in page.locator("#database-error").inner_text()
    assert page.locator("#health-banner").inner_text().startswith("Deals are not flowing")
    screenshot("overview-outage")
    response = page.goto(base + "/deals")
    assert response.status == 503 and "Database unavailable" in page.content()
    healthz = requests.get(base + "/healthz", timeout=10)
    assert healthz.status_code == 503 and "Redis unreachable" in healthz.json()["reason"]
    assert requests.get(base + "/api/deal-count", timeout=10).status_code == 503
    assert requests.get(base + "/deals.csv", timeout=10).status_code == 503
