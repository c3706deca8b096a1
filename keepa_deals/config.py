"""Configuration from the environment and `.env`, validated once, in one place.

`load_settings()` raises `ConfigError` whose message is one line naming the variable and the fix.
Secrets (the Keepa key, passwords, the Redis URL's password) are never echoed.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from dotenv import dotenv_values

from keepa_deals.constants import REAL_KEEPA_API_URL, REAL_REFILL_PERIOD_MS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_KEEPA_KEY_PATTERN = re.compile(r"^[A-Za-z0-9]{64}$")
_SECRET_FIELDS = ("keepa_api_key", "dashboard_password")

# Redis over TLS: the query parameters of REDIS_URL that redis-py and kombu both read, and what
# the REDIS_TLS_* settings fold into them (docs/deploy.md).
REDIS_TLS_CERT_REQS = ("required", "none")  # REDIS_TLS_CERT_REQS: verify the server, or not
_REDIS_TLS_SETTINGS = {"ssl_ca_certs": "REDIS_TLS_CA_FILE", "ssl_cert_reqs": "REDIS_TLS_CERT_REQS"}
_URL_CERT_REQS = ("required", "optional", "none")  # accepted as ssl_cert_reqs in REDIS_URL
_URL_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_URL_SECRET_PARAMETERS = ("password", "ssl_password")  # a query is printed: never a secret


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


WEBHOOK_FORMATS = ("json", "slack", "discord", "ntfy")


@dataclass(frozen=True)
class AlertSettings:
    """Where notifications go (none configured: alerts are only on the dashboard)."""

    webhook_url: str | None = None
    webhook_format: str = "json"
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: str | None = None
    email_to: tuple[str, ...] = ()
    email_from: str | None = None
    repeat_h: float = 6.0
    check_interval_s: float = 30.0  # beat's alert check; the worker's watchdog after 3 missed
    dashboard_url: str | None = None  # the link in a notification; default the local one

    @property
    def channels(self) -> tuple[str, ...]:
        """The configured channels: "webhook", "email"."""
        return (("webhook",) if self.webhook_url else ()) + (
            ("email",) if self.smtp_host and self.email_to else ())


@dataclass(frozen=True)
class Settings:
    """Validated settings; see docs/architecture.md for the variable behind each field."""

    keepa_api_key: str
    keepa_api_url: str
    uses_simulator: bool
    keepa_sim_port: int
    keepa_domain: int
    keepa_connect_timeout_s: float
    keepa_read_timeout_s: float
    refill_period_ms: int
    redis_url: str | None  # REDIS_URL with REDIS_TLS_* folded into its query
    database_path: Path
    query_path: Path
    backfill_interval_s: float
    upsert_interval_s: float
    janitor_interval_s: float
    task_slice_s: float
    lock_ttl_s: float
    janitor_max_age_h: float
    enrich_max_age_h: float
    dashboard_host: str
    dashboard_port: int
    dashboard_password: str | None
    var_dir: Path
    alerts: AlertSettings = AlertSettings()
    log_format: str = "text"  # LOG_FORMAT: text (human-readable) or json (one object a line)
    database_url: str | None = None  # DATABASE_URL: postgresql://… selects PostgreSQL
    host_name: str = ""  # HOST_NAME: this host in heartbeats, leases, runs (host.host_name())

    @property
    def database(self) -> str | Path:
        """Where the deal store lives: the PostgreSQL URL when set, else the SQLite file."""
        return self.database_url or self.database_path

    @property
    def url_secrets(self) -> tuple[str, ...]:
        """Every spelling of the Redis and database passwords, for scrubbing output."""
        return (*password_forms(self.redis_url or ""), *password_forms(self.database_url or ""))

    @property
    def database_shown(self) -> str:
        """The store's location as it may be printed: a URL without its password."""
        return redact_url(self.database_url) if self.database_url else str(self.database_path)

    def __repr__(self) -> str:
        return f"Settings({self.redacted()!r})"

    def redacted(self) -> dict:
        """The settings as a dict that is safe to print or log."""
        values = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        for name in _SECRET_FIELDS:
            if values[name]:
                values[name] = "***"
        for name in ("redis_url", "database_url"):
            if values[name]:
                values[name] = redact_url(values[name])
        alerts = values["alerts"]
        if alerts["smtp_password"]:
            alerts["smtp_password"] = "***"
        if alerts["webhook_url"]:  # a webhook URL is a credential (Slack, Discord, ntfy topics)
            alerts["webhook_url"] = redact_webhook(alerts["webhook_url"])
        return values


_SOFT_LIMIT_MARGIN_S = 30  # after the slice: one last request may still be in flight
_HARD_LIMIT_MARGIN_S = 30  # between the soft limit (clean stop) and the hard kill
_MIN_VISIBILITY_TIMEOUT_S = 3600


def time_limits(settings: Settings) -> tuple[float, float, float]:
    """(soft, hard, visibility timeout) in seconds: slice < soft < hard < visibility."""
    soft = settings.task_slice_s + 2 * settings.keepa_read_timeout_s + _SOFT_LIMIT_MARGIN_S
    hard = soft + _HARD_LIMIT_MARGIN_S
    visibility = max(_MIN_VISIBILITY_TIMEOUT_S, 3 * hard)
    return soft, hard, visibility


def redact_url(url: str) -> str:
    """Replace the password of a URL such as redis://:pw@host:6379/0 with ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def password_forms(url: str) -> tuple[str, ...]:
    """The URL's password as written (percent-encoded) and as sent; () without one. Scrub
    both from anything shown."""
    password = urlsplit(url).password
    return tuple(sorted({password, unquote(password)}, key=len, reverse=True)) if password else ()


def redact_webhook(url: str) -> str:
    """Only the scheme and host of a webhook URL: its path and query often are the secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/***"


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: str | os.PathLike | None = None
) -> Settings:
    """Read and validate settings from `environ` (default os.environ) over the `.env` file.

    Real environment variables win over `.env`. Relative paths are resolved against the project
    root so that workers, scripts and the dashboard agree on the same files.
    """
    env = _merged_environment(environ, dotenv_path)
    reader = _Reader(env)

    api_key = reader.text("KEEPA_API_KEY")
    uses_simulator = api_key is None
    if api_key is not None and not _KEEPA_KEY_PATTERN.match(api_key):
        raise ConfigError(
            f"KEEPA_API_KEY: expected 64 letters and digits, got {len(api_key)} characters "
            "(copy the key from your Keepa account page, or unset it to use the simulator)"
        )
    sim_port = reader.integer("KEEPA_SIM_PORT", 8765, low=1, high=65535)
    if uses_simulator:
        from keepa_sim import DEFAULT_API_KEY

        api_key = DEFAULT_API_KEY
        default_url = f"http://127.0.0.1:{sim_port}"
    else:
        default_url = REAL_KEEPA_API_URL
    var_dir = reader.path("VAR_DIR", "var")
    return Settings(
        keepa_api_key=api_key,
        keepa_api_url=reader.url("KEEPA_API_URL", default_url, schemes=("http", "https")),
        uses_simulator=uses_simulator,
        keepa_sim_port=sim_port,
        keepa_domain=reader.integer("KEEPA_DOMAIN", 1, low=1, high=12),
        keepa_connect_timeout_s=reader.number("KEEPA_CONNECT_TIMEOUT_S", 10, low=0.1),
        keepa_read_timeout_s=reader.number("KEEPA_READ_TIMEOUT_S", 60, low=0.1),
        refill_period_ms=reader.integer(
            "KEEPA_REFILL_PERIOD_MS", REAL_REFILL_PERIOD_MS, low=10, high=3_600_000
        ),
        redis_url=_redis_url(reader),
        database_path=reader.path("DATABASE_PATH", str(var_dir / "deals.db")),
        query_path=reader.path("KEEPA_QUERY_PATH", "keepa_query.json"),
        backfill_interval_s=reader.number("BACKFILL_INTERVAL_S", 60, low=0.1),
        upsert_interval_s=reader.number("UPSERT_INTERVAL_S", 60, low=0.1),
        janitor_interval_s=reader.number("JANITOR_INTERVAL_S", 3600, low=1),
        task_slice_s=reader.number("TASK_SLICE_S", 240, low=1),
        lock_ttl_s=reader.number("LOCK_TTL_S", 30, low=0.5, high=600),
        janitor_max_age_h=reader.number("JANITOR_MAX_AGE_H", 72, low=1),
        enrich_max_age_h=reader.number("ENRICH_MAX_AGE_H", 24, low=0.0001),
        dashboard_host=reader.text("DASHBOARD_HOST") or "127.0.0.1",
        dashboard_port=reader.integer("DASHBOARD_PORT", 5000, low=1, high=65535),
        dashboard_password=reader.text("DASHBOARD_PASSWORD"),
        var_dir=var_dir,
        alerts=_alert_settings(reader),
        log_format=_choice(reader, "LOG_FORMAT", ("text", "json"), "text"),
        database_url=reader.optional_url("DATABASE_URL", schemes=("postgresql", "postgres")),
        host_name=reader.text("HOST_NAME") or socket.gethostname(),
    )


def _choice(reader: _Reader, name: str, choices: tuple[str, ...], default: str) -> str:
    value = (reader.text(name) or default).lower()
    if value not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _redis_url(reader: _Reader) -> str | None:
    """REDIS_URL, checked, with REDIS_TLS_CA_FILE and REDIS_TLS_CERT_REQS folded into its query
    as ssl_ca_certs and ssl_cert_reqs, so that the URL alone tells every client (redis-py, the
    kombu broker) how to reach Redis. The REDIS_TLS_* settings need a rediss:// URL; a
    parameter set both in the URL and by a setting must agree."""
    url = reader.optional_url("REDIS_URL", schemes=("redis", "rediss", "unix"))
    from_settings = {"ssl_ca_certs": _redis_ca_file(reader),
                     "ssl_cert_reqs": _redis_cert_reqs(reader)}
    given = {key: value for key, value in from_settings.items() if value}
    if given and (url is None or urlsplit(url).scheme != "rediss"):
        shown = "unset" if url is None else f"{urlsplit(url).scheme}://…"
        raise ConfigError(f"{_REDIS_TLS_SETTINGS[next(iter(given))]}: only for a rediss:// "
                          f"REDIS_URL (TLS); REDIS_URL is {shown}")
    if url is None:
        return None
    query = _redis_query(url)
    for key, value in given.items():
        if key in query and not _same_parameter(key, query[key], value):
            raise ConfigError(f"{_REDIS_TLS_SETTINGS[key]}: REDIS_URL sets {key}="
                              f"{query[key]!r} too; set it in one place")
    extra = "&".join(f"{key}={quote(value, safe='/')}" for key, value in given.items()
                     if key not in query)
    if not extra:
        return url
    parts = urlsplit(url)
    return parts._replace(query="&".join(filter(None, (parts.query, extra)))).geturl()


def _redis_cert_reqs(reader: _Reader) -> str | None:
    """REDIS_TLS_CERT_REQS (required: verify the server's certificate), or None when unset."""
    if reader.text("REDIS_TLS_CERT_REQS") is None:
        return None
    return _choice(reader, "REDIS_TLS_CERT_REQS", REDIS_TLS_CERT_REQS, "required")


def _redis_ca_file(reader: _Reader) -> str | None:
    """REDIS_TLS_CA_FILE as an absolute path to a readable file, or None when unset."""
    if reader.text("REDIS_TLS_CA_FILE") is None:
        return None
    path = reader.path("REDIS_TLS_CA_FILE", "")
    if not (path.is_file() and os.access(path, os.R_OK)):
        raise ConfigError(f"REDIS_TLS_CA_FILE: no readable file at {path} (the PEM certificate "
                          "of the CA that signed the Redis server's certificate)")
    return str(path)


def _redis_query(url: str) -> dict[str, str]:
    """The query parameters of REDIS_URL, checked: no secret in them (a query is printed),
    ssl_* only with rediss://, a known ssl_cert_reqs, TLS files that exist."""
    parts = urlsplit(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    secret = next((key for key in _URL_SECRET_PARAMETERS if key in query), None)
    if secret:
        raise ConfigError(f"REDIS_URL: {secret} must not be in the query (it would be shown): "
                          "put the password before the host, rediss://:PASSWORD@host:port/0")
    tls = sorted(key for key in query if key.startswith("ssl_"))
    if tls and parts.scheme != "rediss":
        raise ConfigError(f"REDIS_URL: {tls[0]} needs the rediss:// scheme (TLS)")
    if query.get("ssl_cert_reqs", "required") not in _URL_CERT_REQS:
        raise ConfigError(f"REDIS_URL: ssl_cert_reqs must be one of {', '.join(_URL_CERT_REQS)}"
                          f", got {query['ssl_cert_reqs']!r}")
    for key in _URL_TLS_FILES:
        if key in query and not os.access(query[key], os.R_OK):
            raise ConfigError(f"REDIS_URL: {key} names no readable file: {query[key]}")
    return query


def _same_parameter(key: str, in_url: str, from_setting: str) -> bool:
    """Whether a TLS parameter of the URL says what its setting says (files compared by path)."""
    if key == "ssl_ca_certs":
        return Path(in_url).resolve() == Path(from_setting).resolve()
    return in_url == from_setting


def _alert_settings(reader: _Reader) -> AlertSettings:
    webhook_format = _choice(reader, "ALERT_WEBHOOK_FORMAT", WEBHOOK_FORMATS, "json")
    email_to = tuple(a.strip() for a in (reader.text("ALERT_EMAIL_TO") or "").split(",")
                     if a.strip())
    smtp_host = reader.text("ALERT_SMTP_HOST")
    if bool(smtp_host) != bool(email_to):
        missing = "ALERT_EMAIL_TO" if smtp_host else "ALERT_SMTP_HOST"
        raise ConfigError(f"{missing}: e-mail alerts need both ALERT_SMTP_HOST and "
                          "ALERT_EMAIL_TO (comma-separated addresses); set it or unset the other")
    bad = [a for a in email_to if "@" not in a]
    if bad:
        raise ConfigError(f"ALERT_EMAIL_TO: not an e-mail address: {bad[0]!r}")
    return AlertSettings(
        webhook_url=reader.optional_url("ALERT_WEBHOOK_URL", schemes=("http", "https"),
                                        secret=True),
        webhook_format=webhook_format,
        smtp_host=smtp_host,
        smtp_port=reader.integer("ALERT_SMTP_PORT", 587, low=1, high=65535),
        smtp_user=reader.text("ALERT_SMTP_USER"),
        smtp_password=reader.text("ALERT_SMTP_PASSWORD"),
        email_to=email_to,
        email_from=reader.text("ALERT_EMAIL_FROM") or "keepa-deals@localhost",
        repeat_h=reader.number("ALERT_REPEAT_H", 6, low=0.001),
        check_interval_s=reader.number("ALERT_CHECK_S", 30, low=0.5),
        dashboard_url=reader.optional_url("ALERT_DASHBOARD_URL", schemes=("http", "https")),
    )


def _merged_environment(environ, dotenv_path) -> dict[str, str]:
    real = dict(os.environ if environ is None else environ)
    path = Path(dotenv_path) if dotenv_path is not None else PROJECT_ROOT / ".env"
    from_file: dict[str, str] = {}
    if path.is_file():
        try:
            from_file = {k: v for k, v in dotenv_values(path).items() if v is not None}
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f".env: cannot read {path}: {exc.__class__.__name__}") from None
    return {**from_file, **real}


class _Reader:
    """Typed access to environment variables, raising ConfigError that names the variable."""

    def __init__(self, env: Mapping[str, str]):
        self._env = env

    def text(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def integer(self, name, default, *, low=None, high=None) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
        return self._in_range(name, value, low, high)

    def number(self, name, default, *, low=None, high=None) -> float:
        raw = self.text(name)
        if raw is None:
            return float(default)
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
        return self._in_range(name, value, low, high)

    def path(self, name, default) -> Path:
        path = Path(self.text(name) or default)
        return path if path.is_absolute() else PROJECT_ROOT / path

    def url(self, name, default, *, schemes) -> str:
        return self.optional_url(name, schemes=schemes) or default

    def optional_url(self, name, *, schemes, secret: bool = False) -> str | None:
        """The URL in `name`, checked; a `secret` one (a webhook) is never echoed in errors."""
        raw = self.text(name)
        if raw is None:
            return None
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            shown = "<not shown: it holds a secret>" if secret else (
                redact_url(raw) if parts.scheme else "<not a URL>")
            raise ConfigError(
                f"{name}: expected a {'/'.join(schemes)} URL, got {shown!r}"
            )
        return raw.rstrip("/") if parts.scheme in ("http", "https") else raw

    @staticmethod
    def _in_range(name, value, low, high):
        if low is not None and value < low:
            raise ConfigError(f"{name}: must be at least {low}, got {value}")
        if high is not None and value > high:
            raise ConfigError(f"{name}: must be at most {high}, got {value}")
        return value
