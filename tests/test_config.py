"""Configuration (PROTOCOL.md §5): defaults ← file ← IM_* environment ← flags; unknown keys and
bad values are refused with a message naming the key, and `im check-config` exits 2."""

import os
import subprocess
import sys

import pytest

from im import config
from im.config import ConfigError


@pytest.fixture(autouse=True)
def elsewhere(tmp_path, monkeypatch):
    """Run from a directory without etc/im.toml, so only what a test gives is read."""
    monkeypatch.chdir(tmp_path)
    yield
    config.load(env={})  # leave the process's timezone as the defaults say


def write(tmp_path, text: str) -> str:
    path = tmp_path / "im.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults():
    cfg = config.load(env={})
    assert (cfg.tcp_port, cfg.http_port) == (7070, 7080)
    assert cfg.database_url == "" and cfg.data_dir == "./var"
    assert str(cfg.files_path) == "var/files"
    assert cfg.admin_allow == ["127.0.0.1", "::1"] and cfg.admin_key == ""
    assert cfg.max_frame_bytes == 65536 and cfg.max_outbox_frames == 1000
    assert cfg.login_timeout_s == 10 and cfg.idle_timeout_s == 120
    assert cfg.max_body_chars == 4000 and cfg.require_friendship is False
    assert (cfg.login_failures_per_uid_addr, cfg.login_failures_per_addr) == (10, 60)
    assert cfg.shutdown_timeout_s == 10 and cfg.timezone == "UTC" and not cfg.tls


def test_the_shipped_example_file_is_valid():
    example = os.path.join(os.path.dirname(__file__), "..", "etc", "im.toml")
    assert config.load(example, env={}) == config.load(env={})


def test_file_then_environment_then_flags(tmp_path):
    path = write(tmp_path, 'tcp_port = 1001\nhttp_port = 1002\nidle_timeout_s = 30\n'
                           'admin_allow = ["10.0.0.1"]\nrequire_friendship = true\n')
    cfg = config.load(path, env={})
    assert (cfg.tcp_port, cfg.http_port, cfg.idle_timeout_s) == (1001, 1002, 30.0)
    assert cfg.admin_allow == ["10.0.0.1"] and cfg.require_friendship is True

    env = {"IM_HTTP_PORT": "2002", "IM_TCP_PORT": "2001", "IM_ADMIN_ALLOW": "10.0.0.2, 10.0.0.3",
           "IM_REQUIRE_FRIENDSHIP": "off"}
    cfg = config.load(path, env=env)
    assert (cfg.tcp_port, cfg.http_port, cfg.idle_timeout_s) == (2001, 2002, 30.0)
    assert cfg.admin_allow == ["10.0.0.2", "10.0.0.3"] and cfg.require_friendship is False

    cfg = config.load(path, env=env, overrides={"tcp_port": 3001, "http_port": None})
    assert (cfg.tcp_port, cfg.http_port) == (3001, 2002)


def test_config_file_named_by_environment(tmp_path):
    path = write(tmp_path, "max_body_chars = 10\n")
    assert config.load(env={"IM_CONFIG": path}).max_body_chars == 10


def test_etc_im_toml_of_the_working_directory_is_read(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "im.toml").write_text("node_id = 'here'\n")
    assert config.load(env={}).node_id == "here"


def test_unknown_key_in_file_is_named(tmp_path):
    path = write(tmp_path, "tcp_port = 1\nmax_frame_byte = 100\n")
    with pytest.raises(ConfigError, match="max_frame_byte"):
        config.load(path, env={})


def test_unknown_flag_is_named():
    with pytest.raises(ConfigError, match="no_such_key"):
        config.load(env={}, overrides={"no_such_key": 1})


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(str(tmp_path / "absent.toml"), env={})
    with pytest.raises(ConfigError, match="im.toml"):
        config.load(write(tmp_path, "tcp_port = = 3\n"), env={})


@pytest.mark.parametrize("key,value", [
    ("tcp_port", "seventy"), ("tcp_port", "70000"), ("tcp_port", "-1"), ("tcp_port", ""),
    ("max_frame_bytes", "10"), ("login_timeout_s", "0"), ("idle_timeout_s", "nan"),
    ("idle_timeout_s", "inf"), ("require_friendship", "maybe"), ("token_ttl_s", "59"),
    ("kdf_cost", "3"), ("kdf_cost", "21"), ("log_level", "LOUD"), ("timezone", "Mars/Olympus"),
    ("login_failures_per_addr", "-1"), ("admin_allow", "10.0.0.1, localhost"), ("admin_allow", "10.0.0.0/33"),
])
def test_bad_environment_value_names_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        config.load(env={f"IM_{key.upper()}": value})


@pytest.mark.parametrize("line,key", [
    ("tcp_port = 7.5", "tcp_port"), ("tcp_port = true", "tcp_port"), ("tcp_port = '80'", None),
    ("data_dir = 3", "data_dir"), ("admin_allow = '1.2.3.4'", None), ("admin_allow = [1]", "admin_allow"),
    ("require_friendship = 1", "require_friendship"), ("idle_timeout_s = 5", None),
    ("max_connections = 0", "max_connections"), ("[server]\ntcp_port = 1", "server"),
])
def test_types_in_the_file(tmp_path, line, key):
    path = write(tmp_path, line + "\n")
    if key is None:
        config.load(path, env={})
    else:
        with pytest.raises(ConfigError, match=key):
            config.load(path, env={})


def test_tls_needs_both_files_readable(tmp_path):
    with pytest.raises(ConfigError, match="tls_key"):
        config.load(env={"IM_TLS_CERT": "/x.pem"})
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="tls_key.*absent.pem"):
        config.load(env={"IM_TLS_CERT": str(cert), "IM_TLS_KEY": str(tmp_path / "absent.pem")})


def test_describe_lists_every_key_with_its_doc():
    described = config.describe(config.load(env={}))
    assert [d[0] for d in described] == list(config.KEYS)
    assert all(doc for _, _, doc in described)


def im(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IM_")}
    return subprocess.run([sys.executable, "-m", "im.cli", *args], env={**clean, **(env or {})},
                          cwd=cwd, capture_output=True, text=True, timeout=60)


def test_check_config_prints_the_effective_values(tmp_path):
    result = im("--config", write(tmp_path, "tcp_port = 4242\n"), "check-config",
                env={"IM_HTTP_PORT": "4343"})
    assert result.returncode == 0, result.stderr
    assert "tcp_port = 4242" in result.stdout and "http_port = 4343" in result.stdout


def test_check_config_refuses_bad_configuration(tmp_path):
    result = im("--config", write(tmp_path, "tcp_prot = 1\n"), "check-config")
    assert result.returncode == 2
    assert "tcp_prot" in result.stderr and result.stdout == ""
    result = im("check-config", env={"IM_IDLE_TIMEOUT_S": "-5"}, cwd=tmp_path)
    assert result.returncode == 2 and "idle_timeout_s" in result.stderr


def test_serve_refuses_to_start_on_a_bad_value(tmp_path):
    result = im("serve", env={"IM_MAX_FRAME_BYTES": "lots"}, cwd=tmp_path)
    assert result.returncode == 2 and "max_frame_bytes" in result.stderr


def test_a_timezone_postgresql_does_not_know_is_refused_at_start(postgres, tmp_path):
    """History pages are written by PostgreSQL in the configured timezone: a name only Python's
    tz database has ("right/UTC", leap seconds counted) must stop the server, not every fetch."""
    try:
        config.load(env={"IM_TIMEZONE": "right/UTC"})
    except ConfigError:
        pytest.skip("this machine's tz database has no right/UTC")
    result = im("serve", "--tcp-port", "0", "--http-port", "0", cwd=tmp_path,
                env={"IM_TIMEZONE": "right/UTC", "IM_DATABASE_URL": postgres.create_database()})
    assert result.returncode == 2 and "timezone" in result.stderr and "right/UTC" in result.stderr
