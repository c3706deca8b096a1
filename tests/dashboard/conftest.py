"""Dashboard fixtures: settings on a temp database and the session's Redis, a real waitress
server in a thread, and headless Chromium (Debian's, driven by playwright; never downloaded)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psycopg
import pytest
from dashboard_helpers import CHROMIUM, CHROMIUM_ARGS, insert_deals, synthetic_deals
from werkzeug.serving import make_server

from keepa_deals import db, postgres
from keepa_deals.config import load_settings
from keepa_deals.dashboard import create_app

_SCREENSHOT_DIRS: list[Path] = []


@pytest.fixture
def make_settings(tmp_path, redis_server):
    """make_settings(**env) -> Settings on this test's database and the session's Redis."""

    def build(**env):
        values = {"DATABASE_PATH": str(tmp_path / "deals.db"), "VAR_DIR": str(tmp_path / "var"),
                  "REDIS_URL": redis_server.url}
        values.update({k: str(v) for k, v in env.items()})
        return load_settings({k: v for k, v in values.items() if v != "None"},
                             dotenv_path=os.devnull)

    return build


@pytest.fixture
def settings(make_settings):
    return make_settings()


@pytest.fixture
def database(settings):
    """A migrated, writable connection to the test database (the pipeline's side)."""
    conn = db.connect(settings.database_path)
    db.migrate(conn)
    yield conn
    conn.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_store(request, tmp_path_factory):
    """An empty deal store shared by one test module, once per backend: a SQLite file path
    or the URL of a PostgreSQL database (dropped after the module). The database orders text
    linguistically (ICU en-US, as a production server's en_US.UTF-8 does), so only SQL that
    asks for the C collation itself gets byte order and ASCII-only case folding."""
    if request.param == "sqlite":
        yield tmp_path_factory.mktemp("store") / "deals.db"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"dashboard_{request.module.__name__.rsplit('.', 1)[-1]}_{os.getpid()}"
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
                     "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'")
    url = server.url(name)
    yield url
    postgres.close_pools()
    server.drop_database(url)


@pytest.fixture
def seeded(database):
    """The database with 137 varied deals."""
    insert_deals(database, synthetic_deals(137, now=int(time.time())))
    return database


@pytest.fixture
def serve():
    """serve(app) -> base URL of a threaded WSGI server in a thread; stopped after the test."""
    servers = []

    def start(app) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def dashboard(settings, database, serve, redis_client):
    """The dashboard on the test database, refreshing its overview every 500 ms."""
    app = create_app(settings)
    app.config["OVERVIEW_REFRESH_MS"] = 500
    return serve(app)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                              headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page; requests leaving 127.0.0.1 (product images) are aborted, not attempted."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", lambda route: route.continue_()
                  if route.request.url.startswith("http://127.0.0.1") else route.abort())
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dashboard-screenshots")
    _SCREENSHOT_DIRS.append(path)
    return path


@pytest.fixture
def screenshot(page, screenshot_dir):
    """screenshot(name): a full-page PNG of the current page; its path is printed."""

    def take(name: str) -> Path:
        path = screenshot_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path

    return take


def pytest_terminal_summary(terminalreporter):
    for path in _SCREENSHOT_DIRS:
        shots = sorted(p.name for p in path.glob("*.png"))
        terminalreporter.write_line(f"dashboard screenshots ({len(shots)}) in {path}")
