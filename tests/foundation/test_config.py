"""Configuration: validated once, one-line errors naming the variable, secrets never echoed."""

import os

import pytest

from keepa_deals.config import ConfigError, load_settings, redact_url
from keepa_deals.constants import REAL_KEEPA_API_URL

pytestmark = pytest.mark.timeout(30)
REAL_LOOKING_KEY = "a1B2" * 16


def settings_from(tmp_path, **env):
    return load_settings(env, dotenv_path=tmp_path / "absent.env")


def test_no_key_means_simulator_mode(tmp_path):
    from keepa_sim import DEFAULT_API_KEY

    settings = settings_from(tmp_path, KEEPA_SIM_PORT="9001")
    assert settings.uses_simulator
    assert settings.keepa_api_key == DEFAULT_API_KEY
    assert settings.keepa_api_url == "http://127.0.0.1:9001"


def test_real_key_defaults_to_real_api(tmp_path):
    settings = settings_from(tmp_path, KEEPA_API_KEY=REAL_LOOKING_KEY)
    assert not settings.uses_simulator
    assert settings.keepa_api_url == REAL_KEEPA_API_URL


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("KEEPA_DOMAIN", "x", "KEEPA_DOMAIN: expected a whole number"),
        ("KEEPA_DOMAIN", "13", "KEEPA_DOMAIN: must be at most 12"),
        ("LOCK_TTL_S", "0", "LOCK_TTL_S: must be at least"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL: expected a redis"),
        ("KEEPA_API_URL", "ftp://x", "KEEPA_API_URL: expected a http/https URL"),
        ("UPSERT_INTERVAL_S", "soon", "UPSERT_INTERVAL_S: expected a number"),
    ],
)
def test_bad_values_give_one_line_errors_naming_the_variable(tmp_path, name, value, expected):
    with pytest.raises(ConfigError) as excinfo:
        settings_from(tmp_path, **{name: value})
    message = str(excinfo.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_a_malformed_key_is_rejected_without_echoing_it(tmp_path):
    bad_key = "secret-but-wrong-length"
    with pytest.raises(ConfigError) as excinfo:
        settings_from(tmp_path, KEEPA_API_KEY=bad_key)
    assert str(excinfo.value).startswith("KEEPA_API_KEY:")
    assert bad_key not in str(excinfo.value)


def test_dotenv_is_read_but_the_real_environment_wins(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("KEEPA_DOMAIN=3\nUPSERT_INTERVAL_S=7\n")
    settings = load_settings({"KEEPA_DOMAIN": "2"}, dotenv_path=dotenv)
    assert settings.keepa_domain == 2
    assert settings.upsert_interval_s == 7


def test_secrets_are_redacted_from_repr(tmp_path):
    settings = settings_from(
        tmp_path,
        KEEPA_API_KEY=REAL_LOOKING_KEY,
        DASHBOARD_PASSWORD="hunter2",
        REDIS_URL="redis://:redispw@127.0.0.1:6379/0",
    )
    shown = repr(settings) + str(settings.redacted())
    for secret in (REAL_LOOKING_KEY, "hunter2", "redispw"):
        assert secret not in shown
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"


def test_alert_settings_are_checked_without_echoing_the_webhook():
    with pytest.raises(ConfigError) as caught:
        load_settings({"ALERT_WEBHOOK_URL": "htps://hooks.example.com/T0/B0/s3cr3t"},
                      dotenv_path=os.devnull)
    assert "ALERT_WEBHOOK_URL" in str(caught.value) and "s3cr3t" not in str(caught.value)
    with pytest.raises(ConfigError, match="ALERT_EMAIL_TO"):
        load_settings({"ALERT_SMTP_HOST": "mail.example.com"}, dotenv_path=os.devnull)
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        load_settings({"LOG_FORMAT": "xml"}, dotenv_path=os.devnull)
    settings = load_settings({"ALERT_WEBHOOK_URL": "https://hooks.example.com/T0/B0/s3cr3t",
                              "ALERT_SMTP_HOST": "mail.example.com",
                              "ALERT_EMAIL_TO": "a@example.com, b@example.com",
                              "ALERT_SMTP_PASSWORD": "pw-s3cr3t"}, dotenv_path=os.devnull)
    assert settings.alerts.channels == ("webhook", "email")
    assert settings.alerts.email_to == ("a@example.com", "b@example.com")
    assert "s3cr3t" not in repr(settings)
