"""The conventions container platforms expect of settings: secrets from files, LOG_LEVEL, and
a warning for a variable with our prefixes that no setting reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from delineate.settings import Settings, SettingsError, unknown_variables, warned_prefixes


def test_a_secret_is_read_from_its_file_stripped(tmp_path: Path) -> None:
    """JWT_SECRET_FILE, API_KEYS_FILE, S3_SECRET_ACCESS_KEY_FILE, URL_SIGNING_SECRET_FILE."""
    files = {}
    for name, value in {
        "JWT_SECRET": "j" * 40,
        "API_KEYS": "demo:key",
        "S3_SECRET_ACCESS_KEY": "s3-secret",
        "URL_SIGNING_SECRET": "signing",
    }.items():
        path = tmp_path / name.lower()
        path.write_text(f"  {value}\n")
        files[f"{name}_FILE"] = str(path)
    s = Settings.from_env(files)
    assert s.jwt_secret == "j" * 40
    assert s.api_keys == "demo:key"
    assert s.s3_secret_access_key == "s3-secret"
    assert s.url_signing_secret == "signing"


def test_a_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    """Which one would win is not guessable: refuse to start, naming both."""
    path = tmp_path / "secret"
    path.write_text("x" * 40)
    with pytest.raises(SettingsError, match="JWT_SECRET or JWT_SECRET_FILE"):
        Settings.from_env({"JWT_SECRET": "y" * 40, "JWT_SECRET_FILE": str(path)})


def test_an_unreadable_secret_file_is_refused(tmp_path: Path) -> None:
    """A missing file is an error naming the variable, not an empty secret."""
    with pytest.raises(SettingsError, match="API_KEYS_FILE"):
        Settings.from_env({"API_KEYS_FILE": str(tmp_path / "missing")})


def test_the_secret_files_are_settings_validated_like_the_values(tmp_path: Path) -> None:
    """A short JWT secret from a file fails the same rule as one from the variable."""
    path = tmp_path / "short"
    path.write_text("short")
    with pytest.raises(ValueError, match="JWT_SECRET must be at least 32 bytes"):
        Settings.from_env({"JWT_SECRET_FILE": str(path)})


@pytest.mark.parametrize("value", ["debug", "INFO", "Warning", "ERROR", "critical"])
def test_log_level_accepts_the_logging_levels(value: str) -> None:
    """Any case; the default is INFO."""
    assert Settings.from_env({"LOG_LEVEL": value}).log_level == value
    assert Settings.from_env({}).log_level == "INFO"


def test_log_level_rejects_other_values() -> None:
    """A misspelt level fails at start-up, naming the variable."""
    with pytest.raises(SettingsError, match="LOG_LEVEL"):
        Settings.from_env({"LOG_LEVEL": "verbose"})


def test_misspelt_settings_are_named_with_the_closest_known_name() -> None:
    """REDIS_ULR, JOB_CONCURENCY, S3_BUCKET, DELINEATE_LOG_LEVEL: each with what was meant."""
    found = unknown_variables(
        {"REDIS_ULR": "x", "JOB_CONCURENCY": "2", "S3_BUCKET": "b", "DELINEATE_LOG_LEVEL": "debug"}
    )
    assert found == [
        ("DELINEATE_LOG_LEVEL", "LOG_LEVEL"),
        ("JOB_CONCURENCY", "JOB_CONCURRENCY"),
        ("REDIS_ULR", "REDIS_URL"),
        ("S3_BUCKET", "S3_BUCKET_NAME"),
    ]


def test_known_and_unrelated_variables_do_not_warn() -> None:
    """Settings, secret files, the SDKs' OTEL_*/SENTRY_*, the shell's, Kubernetes's links."""
    environ = {
        "REDIS_URL": "redis://x",
        "JWT_SECRET_FILE": "/run/secrets/jwt",
        "OTEL_SERVICE_NAME": "x",
        "SENTRY_TRACES_SAMPLE_RATE": "1",
        "HOME": "/root",
        "PATH": "/bin",
        "HOSTNAME": "pod-1",
        "DATA_HOME": "/data",
        "REDIS_SERVICE_HOST": "10.0.0.1",
        "REDIS_SERVICE_PORT": "6379",
        "REDIS_PORT": "tcp://10.0.0.1:6379",
        "REDIS_PORT_6379_TCP_ADDR": "10.0.0.1",
        "DELINEATE_SERVICE_HOST": "10.0.0.2",  # a Kubernetes Service named delineate
        "DELINEATE_PORT": "tcp://10.0.0.2:3000",
    }
    assert unknown_variables(environ) == []


def test_every_setting_but_shared_words_is_under_a_warned_prefix() -> None:
    """The prefixes follow Settings: a new REDIS_/S3_/JOB_ setting is covered by itself."""
    prefixes = warned_prefixes()
    assert {"DELINEATE_", "REDIS_", "S3_", "JOB_", "JWT_", "API_", "DOWNLOAD_"} <= prefixes
    assert not {"HOST_", "OTEL_", "SENTRY_", "DATA_"} & prefixes
