"""capctl.policy.settings: the config's [hook] table, read safely, and the parsed-settings cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from capctl.errors import ConfigError, ParseError
from capctl.policy import settings
from capctl.policy.settings import Settings, cache_path

from .conftest import needs_root

CONFIG = '[hook]\nlog_file = "/var/log/capctl-hook.log"\n\n[grants.config]\nusers = []\n'


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "capctl.toml"
    path.write_text(CONFIG)
    path.chmod(0o644)
    return path


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every TOML parse the code under test makes."""
    calls: list[bytes] = []
    real = settings.parse_config

    def counting(path: str, data: bytes) -> dict[str, object]:
        calls.append(data)
        return real(path, data)

    monkeypatch.setattr(settings, "parse_config", counting)
    return calls


def test_absent_config_is_defaults_and_writes_nothing(tmp_path: Path) -> None:
    assert settings.load(tmp_path / "none.toml") == Settings()
    assert os.listdir(tmp_path) == []


def test_cache_written_then_used_while_the_bytes_are_the_same(config: Path, parses: list[bytes]) -> None:
    want = Settings(hook_log="/var/log/capctl-hook.log")
    assert settings.load(config) == want
    assert len(parses) == 1
    cached = Path(cache_path(config))
    assert cached.name == ".capctl.toml.cache" and cached.parent == config.parent
    assert oct(cached.stat().st_mode & 0o777) == oct(0o644 & ~_umask())
    assert settings.load(config) == want
    assert settings.load(str(config)) == want
    assert len(parses) == 1  # both from the cache
    config.write_text(CONFIG.replace("capctl-hook.log", "other.log"))
    assert settings.load(config) == Settings(hook_log="/var/log/other.log")
    assert len(parses) == 2
    assert sorted(os.listdir(config.parent)) == [".capctl.toml.cache", "capctl.toml"]


def test_unset_setting_cached_too(tmp_path: Path, parses: list[bytes]) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[grants]\n")
    assert settings.load(path) == settings.load(path) == Settings()
    assert len(parses) == 1


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda blob: blob + b"\n", id="other-config-bytes"),
        pytest.param(lambda blob: blob.replace(b"cache 4", b"cache 3"), id="other-format"),
        pytest.param(lambda blob: blob.replace(b"hook_log 2f", b"hook_log zz"), id="bad-hex"),
        pytest.param(lambda blob: blob.replace(b"hook_log 2f", b"hook_log 41"), id="relative-log"),
        pytest.param(lambda blob: blob.replace(b"hook_log", b"hook_lag"), id="unknown-key"),
    ],
)
def test_a_cache_that_does_not_match_is_not_used(
    config: Path, parses: list[bytes], tamper: object
) -> None:
    settings.load(config)
    cached = Path(cache_path(config))
    blob = cached.read_bytes()
    changed = tamper(blob)  # type: ignore[operator]
    assert changed != blob
    cached.write_bytes(changed)
    assert settings.load(config) == Settings(hook_log="/var/log/capctl-hook.log")
    assert len(parses) == 2
    assert cached.read_bytes() == blob  # and rewritten


@needs_root
def test_cache_not_root_owned_is_ignored(config: Path, parses: list[bytes]) -> None:
    settings.load(config)
    cached = cache_path(config)
    os.chown(cached, 1234, 0)
    assert settings.load(config) == Settings(hook_log="/var/log/capctl-hook.log")
    assert len(parses) == 2
    assert os.stat(cached).st_uid == 0  # rewritten


def test_cache_symlink_is_not_followed(config: Path, tmp_path: Path, parses: list[bytes]) -> None:
    settings.load(config)
    real = tmp_path / "real-cache"
    os.rename(cache_path(config), real)
    os.symlink(real, cache_path(config))
    assert settings.load(config) == Settings(hook_log="/var/log/capctl-hook.log")
    assert len(parses) == 2
    assert not os.path.islink(cache_path(config))  # replaced by a regular file


def test_unwritable_cache_place_still_loads(config: Path, parses: list[bytes]) -> None:
    os.mkdir(cache_path(config))  # rename over a directory fails
    for _ in range(2):
        assert settings.load(config) == Settings(hook_log="/var/log/capctl-hook.log")
    assert len(parses) == 2
    assert sorted(os.listdir(config.parent)) == [".capctl.toml.cache", "capctl.toml"]


def test_malformed_config_is_an_error_even_with_a_cache(config: Path) -> None:
    settings.load(config)
    config.write_text("[hook\n")
    with pytest.raises(ParseError, match="not valid TOML"):
        settings.load(config)
    config.write_text('[hook]\nlog_file = "relative"\n')
    with pytest.raises(ConfigError, match="absolute path"):
        settings.load(config)
    config.write_text('[hook]\nlevel = 1\n')
    with pytest.raises(ConfigError, match="unknown setting"):
        settings.load(config)


@needs_root
def test_config_not_root_owned_is_refused_before_the_cache(config: Path) -> None:
    settings.load(config)
    os.chown(config, 1234, 0)
    with pytest.raises(ConfigError, match="not owned by root"):
        settings.load(config)


@pytest.mark.parametrize(("text", "want"), [
    ("", settings.HostSettings(None, None)),
    ('[host]\ndriver_root = "/"\n', settings.HostSettings("/", None)),
    ('[host]\ntopology = "/t.json"\n', settings.HostSettings(None, "/t.json")),
], ids=["unset", "root-set-to-slash", "topology-only"])
def test_host_settings_say_what_is_unset_through_the_cache(
        tmp_path: Path, parses: list[bytes], text: str, want: settings.HostSettings) -> None:
    """None is "not in [host]" (an option's or the default's turn), never a value: a root
    set to / is set, and the cache keeps the difference."""
    path = tmp_path / "c.toml"
    path.write_text("[hook]\n" + text)
    path.chmod(0o644)
    data = path.read_bytes()
    assert settings.load_with_host(path, data)[1] == want
    assert settings.load_with_host(path, data)[1] == want
    assert len(parses) == 1  # the second came from the cache
