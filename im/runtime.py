"""The process's shared services: configuration, database pool, router.

Started once per process (`im serve`, `im tcp`, a gunicorn worker after fork, a CLI command);
feature code reaches them as `runtime.cfg`, `runtime.db`, `runtime.router`.
"""

import logging
import time

import psycopg2

from im import config as config_mod
from im import db as db_mod
from im import registry, schema
from im.errors import Unavailable

log = logging.getLogger("im.runtime")

cfg: config_mod.Config = None  # type: ignore[assignment]
db: db_mod.Pool = None  # type: ignore[assignment]
# reserved for the batch writers (chat messages, receipts): logins, QIDs and uploads that
# exhaust `db` under overload must not make acknowledged-message writes wait or fail
writer_db: db_mod.Pool = None  # type: ignore[assignment]
WRITER_POOL_SIZE = 2
router = None
tcp_server = None  # the TcpServer, in processes that host TCP sessions
database_label = ""
_embedded = None
_stop_hooks: list = []


class OneLineFormatter(logging.Formatter):
    """One line per event, tracebacks included (newlines escaped), so logs grep and rotate well."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\\n")


def setup_logging(c: config_mod.Config) -> None:
    """Log to `log_file` (reopened on each call: SIGHUP after rotation) or standard error."""
    handler = logging.FileHandler(c.log_file) if c.log_file else logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"))
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(c.log_level.upper())


def _database_url(c: config_mod.Config) -> str:
    global _embedded, database_label
    if c.database_url:
        database_label = c.database_url.split("@")[-1]
        return c.database_url
    from im.embedded import EmbeddedPostgres
    _embedded = EmbeddedPostgres(c.data_dir)
    url = _embedded.start()
    database_label = f"embedded PostgreSQL in {_embedded.pgdata}"
    return url


def start(c: config_mod.Config, listen: bool = False, sessions: bool = False,
          with_router: bool = True) -> None:
    """Open the pool, apply the schema, load features, build the router.

    `listen`: this process takes cross-process events (every server process: `im serve`,
    `im tcp`, gunicorn workers — their caches must see invalidations); a CLI command only
    publishes. `sessions`: this process also hosts TCP sessions (`im serve`, `im tcp`).
    """
    global cfg, db, writer_db, router
    cfg = c
    db_mod.make_cooperative()
    url = _database_url(c)
    db = db_mod.Pool(url, size=c.db_pool_size, timeout=c.db_timeout_s)
    writer_db = db_mod.Pool(url, size=WRITER_POOL_SIZE, timeout=c.db_timeout_s)
    _apply_schema()
    _check_timezone(c.timezone)
    registry.load_features()
    if with_router:
        from im.tcp.router import make_router
        router = make_router(c, db, listen=listen, sessions=sessions)


def _apply_schema(attempts: int = 20) -> None:
    for attempt in range(attempts):
        try:
            schema.apply(db)
            return
        except Unavailable:
            if attempt == attempts - 1:
                raise
            log.warning("database not reachable yet, retrying")
            time.sleep(0.5)


def _check_timezone(name: str) -> None:
    """PostgreSQL writes the times of history pages: it must know the configured timezone."""
    try:
        with db.autocommit() as cur:
            cur.execute("SELECT now() AT TIME ZONE %s", (name,))
    except psycopg2.DataError:
        raise config_mod.ConfigError(f"config key 'timezone': PostgreSQL does not know {name!r}") from None


def on_stop(fn) -> None:
    """Run `fn()` when the process stops (e.g. flush pending writes)."""
    _stop_hooks.append(fn)


def stop() -> None:
    global _embedded
    for fn in reversed(_stop_hooks):
        try:
            fn()
        except Exception:
            log.exception("stop hook failed")
    _stop_hooks.clear()
    if router is not None:
        router.close()
    if db is not None:
        db.close()
    if writer_db is not None:
        writer_db.close()
    if _embedded is not None:
        _embedded.stop()
        _embedded = None
