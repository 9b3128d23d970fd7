"""An acknowledged message is never lost (PROTOCOL.md §1.4): senders stream messages, the
server is killed with SIGKILL mid-stream and restarted on the same database; every ACKed
message is stored exactly once at the position its ACK named, the streams have no gaps, and
retrying everything afterwards stores nothing twice."""

import threading
import time
import uuid

from im import protocol

MSG = protocol.IM_MESSAGE
SENDERS = 3
CHUNK = 20


class Sender(threading.Thread):
    """Streams messages to `to`, CHUNK pipelined at a time, until the connection breaks."""

    def __init__(self, client, to: str):
        super().__init__(daemon=True)
        self.client, self.to = client, to
        self.sent: list[str] = []
        self.acked: dict[str, dict] = {}

    def run(self) -> None:
        try:
            while True:
                chunk = [uuid.uuid4().hex for _ in range(CHUNK)]
                for msgid in chunk:
                    self.sent.append(msgid)
                    self.client.send(MSG, {"msgid": msgid, "to": self.to, "type": "0", "body": msgid})
                for msgid in chunk:
                    self.acked[msgid] = self.client.ack_for(MSG, msgid, timeout=5)
        except OSError:  # the server died: ConnectionClosed, reset, broken pipe or timeout
            pass


def stream_until_acked(srv, make_users, connect, acked: int):
    """SENDERS clients streaming to rose until `acked` messages are ACKed (or 20 s pass)."""
    *senders, rose = make_users(SENDERS + 1, srv=srv)
    streams = [Sender(connect(uid, srv=srv), rose) for uid in senders]
    for s in streams:
        s.start()
    deadline = time.monotonic() + 20
    while sum(len(s.acked) for s in streams) < acked and time.monotonic() < deadline:
        time.sleep(0.02)
    return senders, rose, streams


def test_acked_messages_survive_sigkill(make_server, make_users, connect):
    srv = make_server()
    senders, rose, streams = stream_until_acked(srv, make_users, connect, 300)
    srv.kill()
    for s in streams:
        s.join(10)
    assert sum(len(s.acked) for s in streams) >= 300

    srv.start()
    for uid, s in zip(senders, streams):
        rows = dict(srv.sql("SELECT msgid, from_seq FROM tp_im_message WHERE msgfrom = %s", (uid,)))
        for msgid, ack in s.acked.items():
            assert rows.get(msgid) == ack["seq"]
        assert sorted(rows.values()) == list(range(1, len(rows) + 1))
    assert_gapless_mailbox(srv, rose)

    # Every sender retries everything it sent: ACKed ones get their original ACK back.
    for uid, s in zip(senders, streams):
        client = connect(uid, srv=srv)
        for msgid in s.sent:
            ack = client.message(rose, msgid, msgid=msgid)
            if msgid in s.acked:
                assert ack == s.acked[msgid]
        count = srv.sql("SELECT count(*), max(from_seq) FROM tp_im_message WHERE msgfrom = %s", (uid,))
        assert count == [(len(s.sent), len(s.sent))]
    assert_gapless_mailbox(srv, rose)


def test_sigterm_flushes_what_is_queued(make_server, make_users, connect):
    srv = make_server()
    senders, rose, streams = stream_until_acked(srv, make_users, connect, 100)
    assert srv.stop() == 0
    for s in streams:
        s.join(10)
    srv.start()
    for uid, s in zip(senders, streams):
        rows = dict(srv.sql("SELECT msgid, from_seq FROM tp_im_message WHERE msgfrom = %s", (uid,)))
        assert all(rows.get(msgid) == ack["seq"] for msgid, ack in s.acked.items())
        assert sorted(rows.values()) == list(range(1, len(rows) + 1))
    assert_gapless_mailbox(srv, rose)


def assert_gapless_mailbox(srv, uid: str) -> None:
    seqs = [r[0] for r in srv.sql("SELECT to_seq FROM tp_im_message WHERE msgto = %s ORDER BY to_seq", (uid,))]
    assert seqs == list(range(1, len(seqs) + 1))
    assert srv.sql("SELECT last_seq FROM im_mailbox WHERE uid = %s", (uid,)) == [(len(seqs),)]
