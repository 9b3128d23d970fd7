"""One greenlet-safe PostgreSQL pool.

Bounded (a semaphore of `size`), with an acquire timeout that raises `Unavailable` rather
than hanging; connections idle for a while are pinged before use; a broken connection is
discarded alone and replaced on demand. With psycogreen's wait callback every query yields
to other greenlets, so the pool survives a PostgreSQL restart: requests fail with
`unavailable` while it is down and succeed again once it is back.
"""

import logging
import time
from collections import deque
from contextlib import contextmanager
from typing import Any
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
from gevent import Timeout
from gevent.lock import BoundedSemaphore

from im.errors import Unavailable

log = logging.getLogger("im.db")

PING_AFTER_IDLE_S = 2.0
BROKEN = (psycopg2.OperationalError, psycopg2.InterfaceError)
OPEN_TRANSACTION = (psycopg2.extensions.TRANSACTION_STATUS_INTRANS,
                    psycopg2.extensions.TRANSACTION_STATUS_INERROR)


class Connection(psycopg2.extensions.connection):
    """A connection that remembers the statements PREPAREd on it (they last the session)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prepared: set[str] = set()


def prepare(cur, statements: dict[str, str]) -> None:
    """PREPARE those of `statements` (name → `(types) AS sql`) not yet prepared on the
    cursor's connection, so that PostgreSQL plans them once per session instead of once per
    execution. A PREPARE outlives a rollback, so it is marked only once it ran."""
    conn = cur.connection
    missing = [name for name in statements if name not in conn.prepared]
    if missing:
        cur.execute(";".join(f"PREPARE {name}{statements[name]}" for name in missing))
        conn.prepared.update(missing)


def execute(cur, statements: dict[str, str], name: str, args: tuple) -> None:
    """Run the prepared statement `name` of `statements`, PREPAREd here first if need be."""
    prepare(cur, statements)
    cur.execute(f"EXECUTE {name}({', '.join(['%s'] * len(args))})", args)


def make_cooperative() -> None:
    """Make psycopg2 yield to gevent while waiting on the network."""
    from psycogreen.gevent import patch_psycopg
    patch_psycopg()


class Pool:
    def __init__(self, dsn: str, size: int = 10, timeout: float = 5.0):
        self.dsn = dsn
        self.size = size
        self.timeout = timeout
        self._sem = BoundedSemaphore(size)
        self._idle: deque = deque()
        self.in_use = 0
        self.waiting = 0
        self._suspect_before = 0.0  # connections idle since before this are pinged before use

    def _connect(self):
        try:
            conn = psycopg2.connect(self.dsn, connect_timeout=max(1, int(self.timeout)),
                                    application_name="im", connection_factory=Connection)
        except BROKEN as err:
            log.warning("database connect failed: %s", str(err).strip().splitlines()[0] if str(err) else err)
            raise Unavailable("database unavailable") from None
        conn.autocommit = False
        return conn

    def _take(self):
        while self._idle:
            conn, since = self._idle.pop()
            if conn.closed:
                continue
            if since <= self._suspect_before or time.monotonic() - since > PING_AFTER_IDLE_S:
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                    conn.rollback()
                except BROKEN:
                    self._suspect_before = time.monotonic()
                    self._discard(conn)
                    continue
            return conn
        return self._connect()

    @staticmethod
    def _discard(conn) -> None:
        try:
            conn.close()
        except Exception:
            pass

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """Borrow a connection; it goes back to the pool unless it broke."""
        self.waiting += 1
        try:
            acquired = self._sem.acquire(timeout=self.timeout)
        finally:
            self.waiting -= 1
        if not acquired:
            raise Unavailable("database pool exhausted")
        self.in_use += 1
        conn = None
        try:
            conn = self._take()
            yield conn
        except BROKEN as err:
            log.warning("database error: %s", str(err).strip().splitlines()[0] if str(err) else err)
            raise Unavailable("database unavailable") from None
        finally:
            if conn is not None:
                self._give_back(conn)
            self.in_use -= 1
            self._sem.release()

    def _give_back(self, conn) -> None:
        """Keep a healthy connection (rolled back if a transaction was left open), close a broken
        one. The error that broke it may come from another connection nested inside, so only
        the connection's own state decides."""
        if not conn.closed and conn.get_transaction_status() in OPEN_TRANSACTION:
            try:
                conn.rollback()
            except BROKEN:
                pass
        if conn.closed:
            self._suspect_before = time.monotonic()  # the others may have died with it
            self._discard(conn)
        elif conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            self._discard(conn)  # interrupted mid-query: its state is unknown
        else:
            self._idle.append((conn, time.monotonic()))

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """`with pool.transaction() as cur:` commits on success, rolls back on any error."""
        with self.connection() as conn:
            try:
                with conn.cursor() as cur:
                    yield cur
                conn.commit()
            except BaseException:
                if not conn.closed:
                    try:
                        conn.rollback()
                    except BROKEN:
                        pass
                raise

    @contextmanager
    def autocommit(self) -> Iterator[Any]:
        """`with pool.autocommit() as cur:` for a lone read: no BEGIN and COMMIT round trips
        (a third of the cost of a one-query transaction). Statements may also open and close
        a transaction themselves (`BEGIN; ...` then `...; COMMIT`): a whole transaction in
        fewer round trips; one left open by an error is rolled back here."""
        with self.connection() as conn:
            conn.autocommit = True  # client-side flag: no round trip
            try:
                with conn.cursor() as cur:
                    yield cur
            finally:
                if not conn.closed and conn.get_transaction_status() in OPEN_TRANSACTION:
                    _rollback_open(conn)
                if not conn.closed and conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    conn.autocommit = False  # otherwise _give_back discards the connection

    def fetchone(self, sql: str, args: Any = None) -> tuple | None:
        with self.transaction() as cur:
            cur.execute(sql, args)
            return cur.fetchone()

    def execute(self, sql: str, args: Any = None) -> int:
        with self.transaction() as cur:
            cur.execute(sql, args)
            return cur.rowcount

    def ping(self, timeout: float) -> bool:
        """True when the database answers a trivial query within `timeout` (for /readyz)."""
        answered = False
        with Timeout(timeout, False):
            try:
                self.fetchone("SELECT 1")
                answered = True
            except Unavailable:
                pass
        return answered

    def close(self) -> None:
        while self._idle:
            self._discard(self._idle.pop()[0])


def _rollback_open(conn) -> None:
    """ROLLBACK a transaction opened by a statement on an autocommit connection (the driver's
    own rollback() does nothing in autocommit mode)."""
    try:
        with conn.cursor() as cur:
            cur.execute("ROLLBACK")
    except BROKEN:
        pass
