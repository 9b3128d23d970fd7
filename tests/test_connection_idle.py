"""Idle connections and heartbeats (PROTOCOL.md §1.5, issue 7): an idle session costs the
server little memory, heartbeats are answered straight from the read callback yet in order
with the frames around them, and a frame arriving in pieces is served (or timed out) whole."""

import socket
import time

from im import protocol
from support import PASSWORD
from test_tls import certificate, https  # noqa: F401  (certificate: the fixture)

PW = PASSWORD
ACK = protocol.IM_MESSAGE_ACK
HEARTBEAT = protocol.encode(protocol.IM_HEARTBEAT, {})


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def login_frame(uid: str, msgid: str = "l", res: str = "pc") -> bytes:
    return protocol.encode(protocol.IM_LOGIN, {"msgid": msgid, "uid": uid, "pwd": PW, "res": res})


def open_idle(srv, uids: list[str]) -> list[socket.socket]:
    """Raw logged-in sockets (the login ACK read), then left silent."""
    socks = []
    for uid in uids:
        s = socket.create_connection(("127.0.0.1", srv.tcp_port), timeout=10)
        s.sendall(login_frame(uid))
        assert s.recv(65536)[4:8] == ACK.to_bytes(4, "big")
        socks.append(s)
    return socks


def test_idle_sessions_cost_the_server_a_few_kib_each(make_server, make_users):
    srv = make_server(log_level="WARNING")
    users = make_users(440, srv=srv)
    warm = open_idle(srv, users[:40])  # pools, caches and arenas settle
    before = rss_kib(srv.proc.pid)
    idle = open_idle(srv, users[100:])
    per_conn = (rss_kib(srv.proc.pid) - before) / len(idle)
    assert per_conn <= 6, f"{per_conn:.1f} KiB of server RSS per idle connection (12.5 before)"
    for s in idle[::40] + warm[:1]:  # every session is still served
        s.sendall(HEARTBEAT)
        assert s.recv(65536)[4:8] == protocol.IM_HEARTBEAT.to_bytes(4, "big")
    for s in warm + idle:
        s.close()


def test_heartbeats_around_a_login_in_one_write_are_answered_in_order(server, make_users):
    """jack@pc sends 50 heartbeats, his login and 50 heartbeats in one write: 50 answers, the
    login ACK, then 50 answers (those queued behind the login wait for it)."""
    jack, = make_users(1)
    client = server.client()
    client.send_bytes(HEARTBEAT * 50 + login_frame(jack, "1") + HEARTBEAT * 50)
    frames = [client.recv(5) for _ in range(101)]
    kinds = [mt for mt, _ in frames]
    assert kinds == [protocol.IM_HEARTBEAT] * 50 + [ACK] + [protocol.IM_HEARTBEAT] * 50
    assert frames[50][1]["msgid"] == "1" and "code" not in frames[50][1]
    assert all(body["time"] for mt, body in frames if mt == protocol.IM_HEARTBEAT)
    client.assert_silent(0.3)
    client.close()


def test_a_frame_in_pieces_is_served_whole(server, make_users):
    """rose@android's login arrives byte by byte, a heartbeat split across two writes."""
    rose, = make_users(1)
    client = server.client()
    for byte in login_frame(rose, "7", res="android"):
        client.send_bytes(bytes([byte]))
    _, ack = client.wait(ACK, 5)
    assert ack["msgid"] == "7" and "token" in ack
    client.send_bytes(HEARTBEAT[:5])
    client.assert_silent(0.2)
    client.send_bytes(HEARTBEAT[5:])
    assert client.wait(protocol.IM_HEARTBEAT, 5)[1]["time"]
    client.close()


def test_half_a_frame_does_not_hold_the_login_deadline(make_server):
    """A client that sends half a login frame and stalls is closed at the login timeout."""
    srv = make_server(login_timeout_s=1)
    client = srv.client()
    client.send_bytes(login_frame("nobody")[:10])
    started = time.monotonic()
    client.wait_closed(timeout=10)
    assert time.monotonic() - started < 8


def test_under_tls_a_pipelined_stream_is_answered_in_order(make_server, certificate):  # noqa: F811
    """Over TLS, frames spanning several TLS records in one write are all read and answered in
    order, and the session still answers once it has idled."""
    cert, key = certificate
    srv = make_server(tls_cert=cert, tls_key=key)
    assert https(srv, cert, "POST", "/admin/users", {"uid": "jack", "pwd": PW})[0] == 201
    client = srv.client(tls=True)
    big = protocol.encode(protocol.IM_HEARTBEAT, {"pad": "x" * 40000})
    client.send_bytes(HEARTBEAT * 20 + login_frame("jack", "1") + big + HEARTBEAT * 20)
    kinds = [client.recv(5)[0] for _ in range(42)]
    assert kinds == [protocol.IM_HEARTBEAT] * 20 + [ACK] + [protocol.IM_HEARTBEAT] * 21
    time.sleep(0.3)
    assert client.heartbeat()["time"]
    client.close()
