"""Settings are read once from the environment; a bad value names the variable."""

import pytest

from delineate.settings import Settings, SettingsError


def test_defaults_follow_the_contract() -> None:
    """Without variables, the contract's defaults apply (PORT 3000, 30 s timeout, 100/60 s)."""
    s = Settings.from_env({})
    assert (s.port, s.request_timeout_ms, s.rate_limit_max_requests) == (3000, 30_000, 100)
    assert (s.download_delay_min_ms, s.download_delay_max_ms) == (10_000, 200_000)
    assert s.cors_origins == "*"
    assert not s.uses_s3


def test_strings_are_converted() -> None:
    """Numbers and booleans arrive as strings; "false" means false (the original's bug)."""
    s = Settings.from_env({"PORT": "8080", "DOWNLOAD_DELAY_ENABLED": "false"})
    assert s.port == 8080
    assert s.download_delay_enabled is False


def test_empty_optional_means_unset() -> None:
    """An empty S3_ENDPOINT or SENTRY_DSN is the same as not setting it."""
    s = Settings.from_env({"S3_ENDPOINT": "", "SENTRY_DSN": ""})
    assert s.s3_endpoint is None
    assert s.sentry_dsn is None


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PORT": "0"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"PORT": "http"}, "PORT"),
        ({"REQUEST_TIMEOUT_MS": "999"}, "REQUEST_TIMEOUT_MS"),
        ({"RATE_LIMIT_MAX_REQUESTS": "0"}, "RATE_LIMIT_MAX_REQUESTS"),
        ({"DOWNLOAD_DELAY_ENABLED": "maybe"}, "DOWNLOAD_DELAY_ENABLED"),
        ({"S3_REGION": ""}, "S3_REGION"),
        ({"DOWNLOAD_DELAY_MIN_MS": "5000", "DOWNLOAD_DELAY_MAX_MS": "10"}, "DOWNLOAD_DELAY_MIN_MS"),
        ({"MAX_BODY_BYTES": "10"}, "MAX_BODY_BYTES"),
        ({"MAX_HEADER_BYTES": "100"}, "MAX_HEADER_BYTES"),
        ({"MAX_HEADER_COUNT": "2"}, "MAX_HEADER_COUNT"),
        ({"HEADER_TIMEOUT_S": "0"}, "HEADER_TIMEOUT_S"),
        ({"BODY_TIMEOUT_S": "-1"}, "BODY_TIMEOUT_S"),
        ({"MAX_JSON_DEPTH": "1"}, "MAX_JSON_DEPTH"),
        ({"MAX_JSON_DEPTH": "5000"}, "MAX_JSON_DEPTH"),
        ({"PUBLIC_BASE_URL": "dl.example"}, "PUBLIC_BASE_URL"),
        ({"PUBLIC_BASE_URL": "https://dl.example/?x=1"}, "PUBLIC_BASE_URL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], name: str) -> None:
    """Start-up stops with one line naming the variable."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert name in message
    assert "\n" not in message


def test_cors_origin_list() -> None:
    """CORS_ORIGINS is `*` or a comma-separated list."""
    s = Settings.from_env({"CORS_ORIGINS": "https://a.example, https://b.example"})
    assert s.cors_origin_list == ["https://a.example", "https://b.example"]


def test_safe_defaults_without_a_proxy() -> None:
    """No proxy is trusted unless named; every limit has a bound by default."""
    s = Settings.from_env({})
    assert s.trusted_proxy_list == []
    assert Settings.from_env({"TRUSTED_PROXIES": "*"}).trusted_proxy_list is None
    assert (s.max_body_bytes, s.max_header_bytes, s.max_header_count) == (1024**2, 32768, 100)
    assert (s.header_timeout_s, s.body_timeout_s, s.max_json_depth) == (10.0, 15.0, 32)


def test_public_base_url_loses_its_trailing_slash() -> None:
    """PUBLIC_BASE_URL is a prefix: links are built as <it>/v1/..."""
    s = Settings.from_env({"PUBLIC_BASE_URL": "https://dl.example/api/"})
    assert s.public_base_url == "https://dl.example/api"
