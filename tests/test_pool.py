"""The database pool: bounded waits, broken connections discarded alone, and a server that
rides out a PostgreSQL restart (503 `unavailable` while it is down, no hang, TCP stays up)."""

import time
from contextlib import ExitStack

import psycopg2
import pytest

from im import db, protocol
from im.client import RequestFailed
from im.db import Pool
from im.errors import Unavailable
from support import ImServer, short_tmpdir

PW = "pw"


class RestartablePostgres:
    """A PostgreSQL of our own (pgserver) that a test may stop and start again."""

    def __init__(self):
        import pgserver
        self.server = pgserver.get_server(short_tmpdir("imp"), cleanup_mode="delete")
        self.socket_dir = self.server.get_postmaster_info().socket_dir
        self.url = self.server.get_uri()

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl
        pg_ctl(list(args), pgdata=self.server.pgdata, user=self.server.system_user, timeout=30)

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        """Start with the options pgserver uses (Unix socket only, same socket directory)."""
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start")

    def close(self) -> None:
        try:
            self.stop()
        except Exception:
            pass
        self.server.cleanup()


@pytest.fixture(scope="module")
def own_postgres():
    pg = RestartablePostgres()
    yield pg
    pg.close()


def backend_pid(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def borrow_all(pool: Pool) -> list[int]:
    """Borrow every connection of the pool at once; their backend pids."""
    with ExitStack() as stack:
        conns = [stack.enter_context(pool.connection()) for _ in range(pool.size)]
        return [backend_pid(c) for c in conns]


def terminate(admin_url: str, pid: int) -> None:
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        conn.close()


# --- the pool itself -------------------------------------------------------------------------

def test_acquire_times_out_with_unavailable_when_all_are_borrowed(postgres):
    pool = Pool(postgres.admin_url, size=2, timeout=0.3)
    try:
        with pool.connection(), pool.connection():
            started = time.monotonic()
            with pytest.raises(Unavailable):
                with pool.connection():
                    pass
            assert 0.25 < time.monotonic() - started < 3
            assert pool.in_use == 2
        assert pool.fetchone("SELECT 1") == (1,)
        assert (pool.in_use, pool.waiting) == (0, 0)
    finally:
        pool.close()


def test_a_broken_connection_is_discarded_alone(postgres):
    pool = Pool(postgres.admin_url, size=3, timeout=2)
    try:
        first, second, third = borrow_all(pool)
        terminate(postgres.admin_url, second)
        with pytest.raises(Unavailable):  # the dead one surfaces once, as `unavailable`
            for _ in range(3):
                borrow_all(pool)
        after = borrow_all(pool)
        assert first in after and third in after and second not in after
        assert len(set(after)) == 3
        assert pool.in_use == 0
    finally:
        pool.close()


def test_idle_connections_are_checked_before_use(postgres, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    pool = Pool(postgres.admin_url, size=3, timeout=2)
    try:
        pids = borrow_all(pool)
        terminate(postgres.admin_url, pids[0])
        time.sleep(0.1)
        after = borrow_all(pool)  # no caller sees the dead connection
        assert set(pids[1:]) < set(after) and pids[0] not in after
    finally:
        pool.close()


def test_a_failed_transaction_rolls_back_and_keeps_the_connection(postgres):
    pool = Pool(postgres.admin_url, size=1, timeout=2)
    try:
        pid = pool.fetchone("SELECT pg_backend_pid()")[0]
        with pytest.raises(psycopg2.errors.DivisionByZero):
            with pool.transaction() as cur:
                cur.execute("SELECT 1 / 0")
        with pool.connection() as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")  # leaves a transaction open: rolled back on return
        assert pool.fetchone("SELECT pg_backend_pid()")[0] == pid
    finally:
        pool.close()


# --- a server riding out a PostgreSQL restart ------------------------------------------------

def http_login(srv: ImServer, uid: str) -> tuple[int, dict, float]:
    started = time.monotonic()
    status, body, _ = srv.http().call("POST", "/api/login", {"uid": uid, "pwd": PW})
    return status, body, time.monotonic() - started


def test_server_survives_a_postgresql_restart(own_postgres, make_server, make_users):
    srv = make_server(database_url=own_postgres.url, db_timeout_s=2)
    jack, = make_users(1, srv=srv)
    phone = srv.client()
    phone.login(jack, PW, res="phone")
    token = srv.http().login(jack, PW)

    own_postgres.stop()
    try:
        for _ in range(3):
            status, body, took = http_login(srv, jack)
            assert (status, body["code"]) == (503, "unavailable") and took < 4
        status, body, _ = srv.http(token).call("POST", "/api/QID_IM_GET_GROUP_LIST", {})
        assert (status, body["code"]) == (503, "unavailable")
        assert phone.heartbeat()  # the sessions live on without the database
        newcomer = srv.client()
        assert newcomer.heartbeat()
        with pytest.raises(RequestFailed) as failed:
            newcomer.login(jack, PW, res="pc")
        assert failed.value.code == "unavailable"
    finally:
        own_postgres.start()

    status, body, _ = http_login(srv, jack)
    assert status == 200 and body["result"]
    assert srv.http(token).call("POST", "/api/QID_IM_GET_GROUP_LIST", {})[0] == 200
    assert srv.client().login(jack, PW, res="pc")["token"]
    assert phone.heartbeat()
    assert phone.request(protocol.IM_LOGOUT, {"msgid": "bye"})["msgid"] == "bye"
    assert phone.wait_closed(timeout=5) == []
