"""Settings validate at start and refuse default secrets in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from konfer.core.settings import Settings


def make(**kw: object) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[arg-type]


def test_local_defaults_are_embedded() -> None:
    s = make(data_dir=Path("/tmp/x"))
    assert s.resolved_database_url == "sqlite+aiosqlite:////tmp/x/konfer.db"
    assert s.redis_url is None
    assert s.s3_endpoint is None
    assert s.resolved_keys_dir == Path("/tmp/x/keys")
    assert s.resolved_public_url == "http://127.0.0.1:8000"


def test_environment_overrides_port_and_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KONFER_PORT", "9001")
    monkeypatch.setenv("KONFER_DATA_DIR", "/srv/konfer")
    monkeypatch.setenv("KONFER_TRUSTED_PROXIES", "10.0.0.1, 10.0.0.2")
    monkeypatch.setenv("KONFER_RATE_LIMITS__AUTH__PER_MINUTE", "30")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.port == 9001
    assert s.data_dir == Path("/srv/konfer")
    assert s.trusted_proxies == ["10.0.0.1", "10.0.0.2"]
    assert s.rate_limits["auth"].per_minute == 30


def test_production_refuses_defaults() -> None:
    with pytest.raises(ValidationError) as info:
        make(env="production")
    text = str(info.value)
    for needle in (
        "KONFER_DATABASE_URL",
        "KONFER_S3_ENDPOINT",
        "KONFER_S3_ACCESS_KEY",
        "KONFER_SIGNING_KEYS_DIR",
    ):
        assert needle in text


def test_production_accepts_real_configuration(tmp_path: Path) -> None:
    s = make(
        env="production",
        database_url="postgresql+psycopg://k@db/konfer",
        s3_endpoint="minio:9000",
        s3_access_key="prod-key",
        s3_secret_key="prod-secret",
        signing_keys_dir=tmp_path,
    )
    assert s.is_production


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 0),
        ("port", 70000),
        ("access_token_ttl_seconds", 0),
        ("env", "staging"),
    ],
)
def test_invalid_values_fail_at_start(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        make(**{field: value})
