"""Cross-process events on one node through PostgreSQL LISTEN/NOTIFY.

Payloads carry ids only (uids, message keys, reasons), well under NOTIFY's 8000-byte limit.
The listening connection reconnects by itself after a database restart.
"""

import logging
import os

import gevent
import orjson
import psycopg2
import psycopg2.extensions
from gevent.socket import wait_read

log = logging.getLogger("im.router.pg")

CHANNEL = "im_events"


class PgBridge:
    def __init__(self, pool, node_id: str, on_event, listen: bool):
        self.pool = pool
        self.origin = f"{node_id}/{os.getpid()}"
        self.on_event = on_event
        self._listener = gevent.spawn(self._listen_forever) if listen else None

    def publish(self, event: dict) -> None:
        payload = orjson.dumps({**event, "_origin": self.origin}).decode()
        self.pool.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    def _listen_forever(self) -> None:
        delay = 0.2
        while True:
            conn = None
            try:
                conn = psycopg2.connect(self.pool.dsn, connect_timeout=5)
                conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
                with conn.cursor() as cur:
                    cur.execute(f"LISTEN {CHANNEL}")
                delay = 0.2
                while True:
                    wait_read(conn.fileno())
                    conn.poll()
                    while conn.notifies:
                        self._dispatch(conn.notifies.pop(0).payload)
            except gevent.GreenletExit:
                break
            except Exception as err:  # database gone: retry with backoff
                if not isinstance(err, (psycopg2.Error, OSError, gevent.Timeout)):
                    log.exception("event listener failed")
                if conn is not None and not conn.closed:
                    conn.close()
                gevent.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if conn is not None and not conn.closed:
                    conn.close()

    def _dispatch(self, payload: str) -> None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if event.pop("_origin", None) != self.origin:
            self.on_event(event)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.kill(block=False)
