"""Fixtures: one PostgreSQL per test session, one shared `im serve`, users, clients.

Tests run against real processes and sockets. Each test makes its own users (unique names),
so tests sharing the server never see each other's data.
"""

import itertools
import secrets

import pytest

from support import PASSWORD, ImServer, Postgres

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres():
    pg = Postgres()
    yield pg
    pg.close()


@pytest.fixture(scope="session")
def server(postgres):
    """The shared server with default settings (short KDF cost)."""
    srv = ImServer(postgres.create_database()).start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server(postgres):
    """Start a dedicated server with its own database and settings: make_server(idle_timeout_s=1)."""
    started = []

    def make(**config) -> ImServer:
        srv = ImServer(config.pop("database_url", None) or postgres.create_database(), **config)
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.kill()


@pytest.fixture
def make_users(server):
    """make_users(n, srv=server) → n new uids (password "pw"), created with the admin API."""
    def make(n: int = 2, srv: ImServer | None = None, **fields) -> list[str]:
        srv = srv or server
        prefix = f"u{next(_counter)}{secrets.token_hex(3)}"
        uids = [f"{prefix}_{i}" for i in range(n)]
        srv.admin().admin("POST", "/users/bulk",
                          {"users": [{"uid": u, "pwd": PASSWORD, **fields} for u in uids]})
        return uids
    return make


@pytest.fixture
def connect(server):
    """connect(uid, res="pc", srv=server) → a logged-in Client, closed after the test."""
    clients = []

    def make(uid: str, res: str = "pc", srv: ImServer | None = None, **kw):
        c = (srv or server).client(**kw)
        clients.append(c)
        c.login(uid, PASSWORD, res=res)
        return c

    yield make
    for c in clients:
        c.close()
