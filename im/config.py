"""Configuration (PROTOCOL.md §5): defaults ← config file ← IM_* environment ← flags.

Every key is typed and bounded; an unknown key or a bad value raises ConfigError naming it,
and the server refuses to start.
"""

import functools
import ipaddress
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DEFAULT_CONFIG_FILE = "etc/im.toml"


class ConfigError(ValueError):
    pass


def _key(default: Any, lo: float | None = None, hi: float | None = None, doc: str = ""):
    return field(default=default, metadata={"lo": lo, "hi": hi, "doc": doc})


@dataclass
class Config:
    database_url: str = _key("", doc="PostgreSQL URL; empty = embedded PostgreSQL under data_dir/pg")
    data_dir: str = _key("./var", doc="where the embedded database and files live")
    files_dir: str = _key("", doc="uploaded files; empty = <data_dir>/files")
    tcp_host: str = _key("0.0.0.0", doc="TCP listen address")
    tcp_port: int = _key(7070, 0, 65535, doc="TCP port (0 = any free port)")
    http_host: str = _key("0.0.0.0", doc="HTTP listen address")
    http_port: int = _key(7080, 0, 65535, doc="HTTP port (0 = any free port)")
    tls_cert: str = _key("", doc="PEM certificate; with tls_key, TCP and HTTP speak TLS")
    tls_key: str = _key("", doc="PEM private key")
    admin_key: str = _key("", doc="bearer key of the admin API; empty = admin API off")
    admin_allow: list = _key(None, doc="addresses or networks (CIDR) allowed to use the admin API")
    redis_url: str = _key("", doc="empty = single node; set = cluster mode")
    node_id: str = _key("", doc="this node's name in a cluster; empty = host name + port")
    timezone: str = _key("UTC", doc="timezone of the times on the wire (an IANA name PostgreSQL knows too)")
    max_frame_bytes: int = _key(65536, 64, 16 * 1024 * 1024, doc="largest TCP frame body")
    login_timeout_s: float = _key(10.0, 0.1, 3600, doc="IM_LOGIN must arrive within this")
    idle_timeout_s: float = _key(120.0, 0.1, 86400, doc="close a connection silent this long")
    max_outbox_frames: int = _key(1000, 1, 1_000_000, doc="frames queued per connection")
    max_body_chars: int = _key(4000, 1, 1_000_000, doc="longest chat body")
    require_friendship: bool = _key(False, doc="1:1 chat only between friends")
    token_ttl_s: int = _key(30 * 86400, 60, 10 * 365 * 86400, doc="session token lifetime")
    token_cache_s: float = _key(5.0, 0, 3600, doc="trust a checked session token this long "
                                "(the server's revocations apply at once); 0 = off")
    max_file_bytes: int = _key(100 * 1024 * 1024, 1, 1 << 40, doc="largest uploaded file")
    max_connections: int = _key(20000, 1, 1_000_000, doc="TCP connections served at once")
    login_failures_per_uid_addr: int = _key(10, 0, 1_000_000, doc="failed logins/min per uid+address; 0 = off")
    login_failures_per_addr: int = _key(60, 0, 1_000_000, doc="failed logins/min per address; 0 = off")
    shutdown_timeout_s: float = _key(10.0, 0.1, 3600, doc="SIGTERM drains within this")
    metrics_port: int = _key(0, 0, 65535, doc="`im tcp`: port of /metrics, /healthz, /readyz; 0 = off")
    db_pool_size: int = _key(10, 1, 1000, doc="database connections per process")
    db_timeout_s: float = _key(5.0, 0.1, 600, doc="wait for a pool connection / a query this long")
    kdf_cost: int = _key(14, 4, 20, doc="log2 of scrypt's N for password hashes (below 12 only for tests)")
    log_level: str = _key("INFO", doc="DEBUG, INFO, WARNING or ERROR")
    log_file: str = _key("", doc="empty = standard error")

    def __post_init__(self) -> None:
        if self.admin_allow is None:
            self.admin_allow = ["127.0.0.1", "::1"]

    @property
    def files_path(self) -> Path:
        return _files_path(self.files_dir, self.data_dir)

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


@functools.lru_cache(maxsize=8)
def _files_path(files_dir: str, data_dir: str) -> Path:
    """One Path per setting: every upload chunk asks for it several times."""
    return Path(files_dir or Path(data_dir) / "files")


KEYS = {f.name: f for f in fields(Config)}


def _coerce(name: str, value: Any) -> Any:
    f = KEYS[name]
    kind = type(f.default) if f.default is not None else list
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                value = low in ("1", "true", "yes", "on")
            elif not isinstance(value, bool):
                raise ValueError(value)
        elif kind is int:
            if isinstance(value, bool) or isinstance(value, float):
                raise ValueError(value)
            value = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            value = float(value)
            if value != value:  # NaN compares false with every bound
                raise ValueError(value)
        elif kind is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(value)
        elif not isinstance(value, str):
            raise ValueError(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {name!r}: bad value {value!r} (expected {kind.__name__})") from None
    lo, hi = f.metadata["lo"], f.metadata["hi"]
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ConfigError(f"config key {name!r}: {value!r} is outside {lo}..{hi}")
    return value


def _check(name: str, source: str) -> None:
    if name not in KEYS:
        raise ConfigError(f"unknown config key {name!r} in {source}")


def load(path: str | None = None, env: dict | None = None, overrides: dict | None = None) -> Config:
    """Build the effective configuration; raises ConfigError naming a bad or unknown key."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = path or env.get("IM_CONFIG") or (DEFAULT_CONFIG_FILE if Path(DEFAULT_CONFIG_FILE).exists() else None)
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {path}: {err}") from None
        for name, value in data.items():
            _check(name, path)
            values[name] = _coerce(name, value)
    for name in KEYS:
        if f"IM_{name.upper()}" in env:
            values[name] = _coerce(name, env[f"IM_{name.upper()}"])
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        _check(name, "command-line flags")
        values[name] = _coerce(name, value)
    cfg = Config(**values)
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"config key 'log_level': bad value {cfg.log_level!r}")
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ConfigError("config keys 'tls_cert' and 'tls_key' must be set together")
    for entry in cfg.admin_allow:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"config key 'admin_allow': {entry!r} is not an address or network") from None
    for key in ("tls_cert", "tls_key"):
        if getattr(cfg, key) and not os.access(getattr(cfg, key), os.R_OK):
            raise ConfigError(f"config key {key!r}: cannot read {getattr(cfg, key)}")
    try:
        from im import timefmt
        timefmt.set_timezone(cfg.timezone)
    except Exception:
        raise ConfigError(f"config key 'timezone': unknown timezone {cfg.timezone!r}") from None
    return cfg


def describe(cfg: Config) -> list[tuple[str, Any, str]]:
    """(key, effective value, doc) for `im check-config` and etc/im.toml."""
    return [(f.name, getattr(cfg, f.name), f.metadata["doc"]) for f in fields(Config)]
