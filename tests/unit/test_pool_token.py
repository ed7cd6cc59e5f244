"""Which pool token a process uses: the configured one, else a random one shared through a 0600 file."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import SecretStr

from flowcore import pooltoken
from flowcore.errors import ConfigError
from flowcore.settings import GatewaySettings, PoolSettings, WorkerSettings


def test_the_configured_token_wins(tmp_path: Path) -> None:
    token_file = tmp_path / "pool.token"
    assert pooltoken.resolve(SecretStr(" s3cret "), token_file, bind_host="0.0.0.0") == "s3cret"
    assert not token_file.exists()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "pool.example.com", ""])
def test_a_pool_service_off_loopback_needs_a_configured_token(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError, match="FLOW_POOL_TOKEN"):
        pooltoken.resolve(SecretStr(""), tmp_path / "pool.token", bind_host=host)
    assert not (tmp_path / "pool.token").exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", None])
def test_on_loopback_a_random_token_is_kept_in_a_private_file(tmp_path: Path, host: str | None) -> None:
    token_file = tmp_path / "deeper" / "pool.token"
    first = pooltoken.resolve(SecretStr(""), token_file, bind_host=host)
    assert len(first) >= 40
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert pooltoken.resolve(SecretStr(""), token_file) == first  # the other processes read the same
    other = tmp_path / "other" / "pool.token"
    assert pooltoken.resolve(SecretStr(""), other) != first  # random, not a fixed default
    assert [p.name for p in token_file.parent.iterdir()] == ["pool.token"]  # no temporary file left


def test_processes_starting_together_agree_on_one_token(tmp_path: Path) -> None:
    token_file = tmp_path / "pool.token"
    with ThreadPoolExecutor(8) as executor:
        tokens = set(executor.map(lambda _: pooltoken.read_or_create(token_file), range(32)))
    assert len(tokens) == 1


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "pool.token"
    token_file.write_text("guessable\n")
    token_file.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        pooltoken.resolve(SecretStr(""), token_file)


def test_a_symlinked_token_file_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("attacker-chosen\n")
    target.chmod(0o600)
    link = tmp_path / "pool.token"
    os.symlink(target, link)
    with pytest.raises(ConfigError, match="cannot read"):
        pooltoken.resolve(SecretStr(""), link)


def test_one_environment_variable_configures_every_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_POOL_TOKEN", "shared")
    monkeypatch.setenv("FLOW_REDIS__PASSWORD", "redis-pw")
    monkeypatch.setenv("FLOW_REDIS__USERNAME", "flow")
    for cls in (GatewaySettings, WorkerSettings, PoolSettings):
        settings = cls()
        assert settings.pool_token.get_secret_value() == "shared"
        assert settings.redis.username == "flow"
        assert settings.redis.password is not None and settings.redis.password.get_secret_value() == "redis-pw"
        assert "redis-pw" not in repr(settings) and "shared" not in repr(settings)


def test_bearer_header() -> None:
    assert pooltoken.bearer("t") == {"Authorization": "Bearer t"}
