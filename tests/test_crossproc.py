"""One node split in two, as deployed without Redis: `im tcp` holds the sessions, gunicorn's
gevent workers answer HTTP. They meet only through PostgreSQL LISTEN/NOTIFY (issue 4)."""

import time

import pytest

from im import protocol
from im.client import Http, rows
from support import ADMIN_KEY, ImServer
from test_friends import befriend
from test_gunicorn import start_gunicorn
from test_ops import scrape, wait_until

MESSAGE = protocol.IM_MESSAGE


class Split:
    """`im tcp` and gunicorn (two workers) on one database."""

    def __init__(self, postgres, workdir):
        database = postgres.create_database()
        self.tcp = ImServer(database, command="tcp").start()
        self.gunicorn, self.log, port = start_gunicorn(database, workdir)
        self.web = f"http://127.0.0.1:{port}"
        self.clients: list = []

    def users(self, n: int) -> list[str]:
        uids = [f"x{time.monotonic_ns() % 10**12}_{i}" for i in range(n)]
        self.admin("POST", "/users/bulk", {"users": [{"uid": u, "pwd": "pw"} for u in uids]})
        return uids

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        return Http(self.web, ADMIN_KEY).admin(method, path, body)

    def connect(self, uid: str, res: str = "pc"):
        client = self.tcp.client()
        self.clients.append(client)
        client.login(uid, "pw", res=res)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.gunicorn.kill()
        self.gunicorn.wait()
        self.tcp.kill()


@pytest.fixture(scope="module")
def split(postgres, tmp_path_factory):
    s = Split(postgres, tmp_path_factory.mktemp("gunicorn"))
    yield s
    s.close()


def test_a_broadcast_through_gunicorn_reaches_im_tcp_sessions_once(split):
    jack, rose = split.users(2)
    jack_pc, jack_android = split.connect(jack, "pc"), split.connect(jack, "android")

    result = split.admin("POST", "/broadcast", {"to": [jack, rose], "body": "fire drill at 3"})
    # a gunicorn worker sees no session of `im tcp`: it cannot count them (documented)
    assert (result["stored"], result["delivered"], result["unknown"]) == (2, 0, [])
    for conn in (jack_pc, jack_android):
        _, got = conn.wait(MESSAGE, 5, **{"from": "system"})
        assert (got["to"], got["type"], got["body"]) == (jack, "0", "fire drill at 3")
        conn.assert_silent(0.5, match=MESSAGE)  # once, not once per process

    # the live delivery counts as given: jack's receipt by its seq marks it (§6.12)
    jack_http = Http(split.web)
    jack_http.login(jack, "pw")
    jack_http.qid("QID_IM_RECIVE_OFFLINE_MSG", seq=got["seq"])
    assert rows(jack_http.qid("QID_IM_GET_OFFLINE_MSG")) == []

    rose_http = Http(split.web)  # rose was offline: the message waits in her mailbox
    rose_http.login(rose, "pw")
    assert [(m["from"], m["body"]) for m in rows(rose_http.qid("QID_IM_GET_OFFLINE_MSG"))] \
        == [("system", "fire drill at 3")]


def test_gunicorn_workers_take_events_from_im_tcp(split):
    """A friendship made over TCP invalidates the membership caches of the HTTP workers too."""
    jack, rose = split.users(2)
    befriend(split.connect(jack), split.connect(rose))

    def friends_changed_seen() -> float:
        samples = scrape(split.web)  # whichever worker answers: every worker listens
        return samples.get(("im_events_received_total", (("op", "friends_changed"),)), 0)

    assert wait_until(friends_changed_seen, 10, "friends_changed in a gunicorn worker") >= 1


def test_im_serve_delivers_its_own_broadcast_once(server, make_users, connect):
    jack, = make_users(1)
    jack_pc = connect(jack)
    result = server.admin().admin("POST", "/broadcast", {"to": [jack], "body": "one copy"})
    assert (result["stored"], result["delivered"]) == (1, 1)
    jack_pc.wait(MESSAGE, 5, **{"from": "system", "body": "one copy"})
    jack_pc.assert_silent(0.5, match=MESSAGE)
