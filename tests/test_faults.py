"""Faults (PROTOCOL.md §1.3-§1.5, §2.1, §2.3, §6.12): a crash, a database outage, a slow
consumer, fetch/mark races, connection churn and half-open connections. Nothing acknowledged is
lost, nothing is marked received unseen, nothing leaks, and everyone else keeps being served.
"""

import os
import random
import socket
import statistics
import struct
import threading
import time
import uuid

import pgserver
from pgserver._commands import pg_ctl

from im import protocol
from im.client import Client, RequestFailed, rows
from support import PASSWORD, short_tmpdir

MSG, ACK, PRESENCE = protocol.IM_MESSAGE, protocol.IM_MESSAGE_ACK, protocol.IM_PRESENCE


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.05)


def befriend(a: Client, b: Client) -> None:
    msgid = uuid.uuid4().hex
    a.request(protocol.IM_ROSTER_ADD_REQ, {"msgid": msgid, "to": b.uid, "msg": ""})
    b.request(protocol.IM_ROSTER_ADD_RESP, {"msgid": msgid, "to": a.uid, "state": "1"})
    a.wait(protocol.IM_NOTIFY_ROSTER_ADD, frd=b.uid)
    b.wait(protocol.IM_NOTIFY_ROSTER_ADD, frd=a.uid)


def friends_watching(srv, make_users, res: str, watcher_res: str) -> tuple[str, str, Client, Client]:
    """Two new users logged in and befriended; the second (the watcher) announced presence."""
    uid, watcher_uid = make_users(2, srv=srv)
    client, watcher = srv.client(), srv.client()
    client.login(uid, PASSWORD, res=res)
    watcher.login(watcher_uid, PASSWORD, res=watcher_res)
    befriend(client, watcher)
    watcher.request(PRESENCE, {"type": "online", "show": "online"})
    return uid, watcher_uid, client, watcher


def offline(srv, token: str, **params) -> list[dict]:
    """Every row of QID_IM_GET_OFFLINE_MSG, following `more` with after_seq."""
    http, found, after = srv.http(token), [], params.pop("after_seq", None)
    while True:
        query = {**params, "limit": "5000", **({"after_seq": str(after)} if after is not None else {})}
        result = http.qid("QID_IM_GET_OFFLINE_MSG", **query)
        found += rows(result)
        if result.get("more") != "1":
            return found
        after = int(found[-1]["seq"])


def delivered(frames) -> list[str]:
    """The msgids of the IM_MESSAGE frames among `frames`."""
    return [body["msgid"] for mt, body in frames if mt == MSG]


# --- server crash -------------------------------------------------------------------------

class Streamer(threading.Thread):
    """One user: streams messages to the next user in chunks, receipts what it receives (upto
    the highest mailbox position delivered), until the connection breaks."""

    CHUNK = 10

    def __init__(self, client: Client, to: str):
        super().__init__(daemon=True)
        self.client, self.to = client, to
        self.sent: list[str] = []
        self.acked: dict[str, int] = {}

    def run(self) -> None:
        client = self.client
        try:
            while True:
                chunk = [uuid.uuid4().hex for _ in range(self.CHUNK)]
                for msgid in chunk:
                    self.sent.append(msgid)
                    client.send(MSG, {"msgid": msgid, "to": self.to, "type": "0", "body": msgid})
                for msgid in chunk:
                    self.acked[msgid] = client.ack_for(MSG, msgid, timeout=5)["seq"]
                seqs = [b["seq"] for mt, b in client.backlog if mt == MSG]
                if seqs:
                    client.send(ACK, {"type": MSG, "upto": max(seqs)})
        except OSError:  # the server died: ConnectionClosed, reset, broken pipe or timeout
            pass


def test_sigkill_with_twenty_clients_streaming_loses_nothing_acked(make_server, make_users):
    srv = make_server()
    users = make_users(20, srv=srv)
    peer = {u: users[(i + 1) % len(users)] for i, u in enumerate(users)}
    sender_of = {to: u for u, to in peer.items()}
    streams = {}
    for uid in users:
        client = srv.client()
        client.login(uid, PASSWORD, res="pc")
        streams[uid] = Streamer(client, peer[uid])
    for s in streams.values():
        s.start()
    time.sleep(random.uniform(1.0, 3.0))
    wait_until(lambda: sum(len(s.acked) for s in streams.values()) >= 200, what="200 ACKs")
    srv.kill()  # SIGKILL at a random moment
    live: dict[str, list[str]] = {}
    for uid, s in streams.items():
        s.join(10)
        live[uid] = delivered(s.client.wait_closed(timeout=5))
        s.client.close()

    srv.start()
    # every ACKed message is stored once, at the position its ACK named
    for uid, s in streams.items():
        stored = dict(srv.sql("SELECT msgid, from_seq FROM tp_im_message WHERE msgfrom = %s", (uid,)))
        assert {m: stored.get(m) for m in s.acked} == s.acked
    # everyone comes back; each retries what was never ACKed
    clients = {}
    for uid in users:
        clients[uid] = srv.client()
        clients[uid].login(uid, PASSWORD, res="pc")

    def retry(uid: str) -> None:
        s = streams[uid]
        for msgid in s.sent:
            if msgid not in s.acked:
                clients[uid].message(peer[uid], msgid, msgid=msgid)

    threads = [threading.Thread(target=retry, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for uid, client in clients.items():
        live[uid] += delivered(client.drain(0.5))

    for uid in users:
        sent = streams[uid].sent
        stored = srv.sql("SELECT msgid, from_seq FROM tp_im_message WHERE msgfrom = %s ORDER BY from_seq", (uid,))
        assert sorted(m for m, _ in stored) == sorted(sent)  # exactly once each
        positions = [r[0] for r in srv.sql(
            "SELECT from_seq FROM tp_im_message WHERE msgfrom = %s UNION ALL "
            "SELECT to_seq FROM tp_im_message WHERE msgto = %s ORDER BY 1", (uid, uid))]
        assert positions == list(range(1, len(positions) + 1))  # the mailbox stays gapless
        # exactly-once delivery; what was not delivered live is in the offline fetch
        sender_sent = set(streams[sender_of[uid]].sent)
        assert len(live[uid]) == len(set(live[uid])), f"{uid} received a message twice"
        assert set(live[uid]) <= sender_sent
        unseen = sender_sent - set(live[uid])
        token = clients[uid].token
        assert unseen <= {m["msgid"] for m in offline(srv, token)}
    for client in clients.values():
        client.close()


# --- database outage ----------------------------------------------------------------------

class Pacer(threading.Thread):
    """Sends one message after another, recording (msgid, outcome, seconds) per request."""

    def __init__(self, client: Client, to: str):
        super().__init__(daemon=True)
        self.client, self.to = client, to
        self.results: list[tuple[str, object, float]] = []
        self.stop = threading.Event()
        self.broken: Exception | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            msgid = uuid.uuid4().hex
            started = time.monotonic()
            try:
                outcome = self.client.message(self.to, "under load", msgid=msgid)["seq"]
            except RequestFailed as err:
                outcome = err.code
            except Exception as err:  # a timeout or a closed connection: the test fails
                self.broken = err
                return
            self.results.append((msgid, outcome, time.monotonic() - started))
            time.sleep(0.02)


def test_database_outage_answers_unavailable_and_recovers(make_server, make_users):
    pg = pgserver.get_server(short_tmpdir("imo"), cleanup_mode="delete")
    try:
        timeout = 2.0
        srv = make_server(database_url=pg.get_uri(), db_timeout_s=timeout)
        jack, rose, tom = make_users(3, srv=srv)
        clients = {u: srv.client() for u in (jack, rose, tom)}
        for uid, c in clients.items():
            c.login(uid, PASSWORD)
        http = srv.http(clients[tom].token)
        pacers = [Pacer(clients[jack], rose), Pacer(clients[rose], jack)]
        for p in pacers:
            p.start()
        time.sleep(1.0)

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pg.pgdata, user=pg.system_user)
        wait_until(lambda: any(r[1] == "unavailable" for p in pacers for r in p.results),
                   what="unavailable ACK")
        status, body, _ = http.call("POST", "/api/QID_IM_GET_GROUP_LIST", {})
        assert (status, body["type"], body["code"]) == (503, "error", "unavailable")
        assert clients[tom].heartbeat()["time"]  # the connections stay up
        time.sleep(2.0)
        pg.ensure_postgres_running()

        recovered = len([r for p in pacers for r in p.results])
        wait_until(lambda: all(isinstance(r[1], int) for p in pacers for r in p.results[-3:])
                   and len([r for p in pacers for r in p.results]) > recovered + 6, timeout=30,
                   what="recovery")
        for p in pacers:
            p.stop.set()
            p.join(10)
            assert p.broken is None, p.broken
        assert http.call("POST", "/api/QID_IM_GET_GROUP_LIST", {})[0] == 200

        outcomes = [r for p in pacers for r in p.results]
        assert {o for _, o, _ in outcomes if not isinstance(o, int)} == {"unavailable"}
        assert max(seconds for _, _, seconds in outcomes) < 3 * timeout + 2  # never a hang
        acked = {m: o for m, o, _ in outcomes if isinstance(o, int)}
        stored = dict(srv.sql("SELECT msgid, from_seq FROM tp_im_message WHERE msgfrom IN (%s, %s)",
                              (jack, rose)))
        assert {m: stored.get(m) for m in acked} == acked  # never a false success
        for c in clients.values():
            assert not c.eof and c.heartbeat()["time"]
    finally:
        pg.cleanup()


# --- slow consumer ------------------------------------------------------------------------

def test_slow_consumer_is_cut_off_and_finds_everything_offline(make_server, make_users):
    srv = make_server(max_outbox_frames=200)
    jack, rose, tom, ann = make_users(4, srv=srv)
    slow = srv.client()
    slow.login(rose, PASSWORD)
    # rose stops reading. Her kernel keeps its initial receive buffer (it grows only as the
    # application reads) and the server's send buffer holds at most tcp_wmem's maximum (4 MiB
    # by default): 10,000 messages of 1,500 characters are well past both and the outbox.
    sender, t, a = (srv.client() for _ in range(3))
    sender.login(jack, PASSWORD)
    t.login(tom, PASSWORD)
    a.login(ann, PASSWORD)

    latencies: list[float] = []
    done = threading.Event()

    def bystanders() -> None:  # tom and ann chat meanwhile
        while not done.is_set():
            started = time.monotonic()
            msgid = uuid.uuid4().hex
            t.message(ann, "still fine?", msgid=msgid)
            a.wait(MSG, msgid=msgid)
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)

    chat = threading.Thread(target=bystanders, daemon=True)
    chat.start()
    body = "x" * 1500
    sent = []
    for _ in range(100):
        chunk = [uuid.uuid4().hex for _ in range(100)]
        for msgid in chunk:
            sender.send(MSG, {"msgid": msgid, "to": rose, "type": "0", "body": body})
        for msgid in chunk:
            assert "seq" in sender.ack_for(MSG, msgid, timeout=10)
        sent += chunk
    done.set()
    chat.join(10)

    got = delivered(slow.wait_closed(timeout=30))  # rose reads again: the server had cut her off
    assert slow.eof and len(got) < len(sent)
    assert statistics.median(latencies) < 0.5 and max(latencies) < 3, latencies
    assert sender.heartbeat()["time"]
    again = srv.client()
    again.login(rose, PASSWORD)
    assert [m["msgid"] for m in offline(srv, again.token)] == sent


# --- fetch / mark races -------------------------------------------------------------------

def test_marks_never_pass_what_was_fetched_while_senders_commit(server, make_users, connect):
    *senders, rose = make_users(4)
    rose_http = server.http(server.http().login(rose, PASSWORD))
    gid = rose_http.qid("QID_IM_SET_GROUP", gname="race", type="2")["result"]
    clients = [connect(u) for u in senders]
    for c in clients:
        c.request(protocol.IM_CHATROOM, {"type": "5", "gid": gid})

    def send(client: Client) -> None:
        for i in range(120):
            client.message(rose, f"m{i}")
            if i % 4 == 0:
                client.message(gid, f"g{i}", group=True)

    threads = [threading.Thread(target=send, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    fetched, group_fetched, rounds = set(), set(), 0
    deadline = time.monotonic() + 60
    while True:
        senders_done = not any(t.is_alive() for t in threads)
        assert time.monotonic() < deadline, "rose never caught up"
        rows_ = rows(rose_http.qid("QID_IM_GET_OFFLINE_MSG", limit="37"))
        fetched |= {(r["from"], r["msgid"]) for r in rows_}
        group_rows = rows(rose_http.qid("QID_IM_GET_GROUP_OFFLINE_MSG", gid=gid, limit="11"))
        group_fetched |= {int(r["seq"]) for r in group_rows}
        if rounds % 2:  # mark everything ever, by position and by time: capped at what was given
            rose_http.qid("QID_IM_RECIVE_OFFLINE_MSG", seq=str(10**9))
            rose_http.qid("QID_IM_RECIVE_GROUP_OFFLINE_MSG", gid=gid, seq=str(10**9))
        else:
            rose_http.qid("QID_IM_RECIVE_OFFLINE_MSG", time="2099-01-01 00:00:00")
            rose_http.qid("QID_IM_RECIVE_GROUP_OFFLINE_MSG", time="2099-01-01 00:00:00")
        marked = set(server.sql("SELECT msgfrom, msgid FROM tp_im_message WHERE msgto = %s AND received = 1",
                                (rose,)))
        assert marked <= fetched, "a message was marked received without being fetched"
        sync = server.sql("SELECT sync_seq FROM tp_im_group_peer WHERE gid = %s AND userid = %s",
                          (gid, rose))[0][0]
        assert set(range(1, sync + 1)) <= group_fetched
        rounds += 1
        if senders_done and not rows_ and not group_rows:
            break
    for t in threads:
        t.join(30)

    stored = server.sql("SELECT msgfrom, msgid, to_seq, indb_time, received FROM tp_im_message "
                        "WHERE msgto = %s ORDER BY to_seq", (rose,))
    assert [r[2] for r in stored] == list(range(1, len(senders) * 120 + 1))  # gapless
    assert [r[3] for r in stored] == sorted(r[3] for r in stored)  # positions in commit order
    assert {(r[0], r[1]) for r in stored} == fetched and all(r[4] == 1 for r in stored)
    seqs = [r[0] for r in server.sql("SELECT seq FROM tp_im_message_group WHERE gid = %s ORDER BY seq", (gid,))]
    assert seqs == list(range(1, len(seqs) + 1)) and set(seqs) == group_fetched


# --- connection churn ---------------------------------------------------------------------

def process_counts(srv) -> dict:
    status = srv.admin().call("GET", "/ops/status")[1]
    sessions = srv.admin().call("GET", "/ops/sessions")[1]
    db = srv.sql("""SELECT count(*) FROM pg_stat_activity
                    WHERE application_name = 'im' AND datname = current_database()""")[0][0]
    return {"fds": len(os.listdir(f"/proc/{srv.proc.pid}/fd")), "db_connections": db,
            "tcp_connections": status["tcp_connections"], "sessions": status["sessions"],
            "pool_in_use": status["pool"]["in_use"], "announced": sum(1 for s in sessions["sessions"] if s["show"])}


def churn(srv, uid: str, token: str, cycles: int, first: int) -> None:
    for i in range(first, first + cycles):
        client = srv.client()
        try:
            client.login(uid, token=token, res=f"r{i}")
            if i % 2:
                client.request(PRESENCE, {"type": "online", "show": "away"})
            if i % 3 == 0:  # vanish with a reset instead of a FIN
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            client.close()


def test_thousands_of_sessions_come_and_go_without_leaks(make_server, make_users):
    srv = make_server()
    jack, watcher, j, w = friends_watching(srv, make_users, "main", "watch")
    token = j.token

    def run(cycles: int, first: int) -> None:
        threads = [threading.Thread(target=churn, args=(srv, jack, token, cycles, first + k * cycles))
                   for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)

    frames, stop = [], threading.Event()

    def watch() -> None:  # the watcher keeps reading its friend's comings and goings
        while not stop.is_set():
            try:
                frames.append(w.recv(0.2))
            except TimeoutError:
                pass

    def settled() -> dict | None:
        counts = process_counts(srv)
        return counts if counts["tcp_connections"] == 2 else None

    watcher_thread = threading.Thread(target=watch, daemon=True)
    watcher_thread.start()
    run(50, 0)  # warm up: the pool and caches reach their working size
    before = wait_until(settled, what="settled connections")
    run(500, 1000)  # 2,000 sessions
    after = wait_until(settled, what="settled connections")
    # the pool may still grow towards db_pool_size: its connections are not leaks
    grown = after["db_connections"] - before["db_connections"]
    assert after["fds"] <= before["fds"] + grown + 2, (before, after)
    assert (after["sessions"], after["pool_in_use"], after["announced"]) == (2, 0, 1)
    time.sleep(0.5)
    stop.set()
    watcher_thread.join(5)
    shows = [b["type"] for mt, b in frames if mt == PRESENCE]
    assert shows.count("online") == shows.count("leave") == (200 + 2000) // 2
    assert j.heartbeat()["time"] and w.heartbeat()["time"]


# --- half-open connections ----------------------------------------------------------------

def test_a_client_that_vanishes_without_fin_is_dropped_and_leaves(make_server, make_users):
    srv = make_server(idle_timeout_s=1)
    jack, rose, phone, r = friends_watching(srv, make_users, "phone", "pc")
    phone.request(PRESENCE, {"type": "online", "show": "online"})
    r.wait(PRESENCE, type="online", **{"from": jack})
    # the phone goes into a tunnel: its socket stays open but nothing more arrives from it
    deadline = time.monotonic() + 8
    left = None
    while left is None and time.monotonic() < deadline:
        r.heartbeat()  # rose stays active
        try:
            left = r.wait(PRESENCE, timeout=0.3, type="leave", **{"from": jack})[1]
        except TimeoutError:
            pass
    assert left == {"type": "leave", "from": jack, "from_res": "phone", "to": rose, "to_res": "pc",
                    "show": "offline"}
    sessions = srv.admin().call("GET", "/ops/sessions")[1]["sessions"]
    assert [(s["uid"], s["res"]) for s in sessions] == [(rose, "pc")]
    phone.wait_closed(timeout=2)
    assert phone.eof
