"""Chat over TCP (PROTOCOL.md §1.3, §1.4, §1.6, §6.3, §6.4, §6.11, §6.12), as conversations
between real clients: jack and rose, each on several resources, and groups of them."""

import threading
import time
import uuid

import psycopg2
import pytest

from im import protocol
from im.client import RequestFailed

MSG, NOTIFY, ACK = protocol.IM_MESSAGE, protocol.IM_NOTIFY_MESSAGE, protocol.IM_MESSAGE_ACK


def new_id() -> str:
    return uuid.uuid4().hex


def make_group(server, owner: str, *members: str) -> str:
    """A group created directly in the database (before its first message: membership is
    cached by the server)."""
    gid = "g" + new_id()[:12]
    server.sql("INSERT INTO tp_im_group (gid, gname, userid) VALUES (%s, 'team', %s)", (gid, owner))
    for uid in (owner, *members):
        server.sql("INSERT INTO tp_im_group_peer (gid, userid) VALUES (%s, %s)", (gid, uid))
    return gid


def eventually(query, args, expected, server, timeout: float = 5.0):
    """Poll the database until `query` returns `expected` (receipts are written in the
    background and get no ACK)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = server.sql(query, args)
        if rows == expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def stored(server, sender: str, msgid: str) -> list[tuple]:
    return server.sql("SELECT msg, msgto, from_seq, to_seq, received FROM tp_im_message "
                      "WHERE msgfrom = %s AND msgid = %s", (sender, msgid))


def code_of(client, body: dict) -> str:
    with pytest.raises(RequestFailed) as failed:
        client.request(MSG, body)
    return failed.value.code


# --- 1:1 -------------------------------------------------------------------------------

def test_message_reaches_every_resource_of_rose_and_carbons_jack(make_users, connect):
    jack, rose = make_users(2)
    jack_android, jack_pc = connect(jack, "android"), connect(jack, "pc")
    rose_pc, rose_android = connect(rose, "pc"), connect(rose, "android")

    ack = jack_android.message(rose, "hello rose", msgid="m1", time="2020-01-01 10:00:00")
    assert ack["type"] == str(MSG) and ack["msgid"] == "m1" and ack["seq"] == 1 and ack["time"]

    expected = {"msgid": "m1", "from": jack, "from_res": "android", "to": rose, "to_res": "",
                "time": ack["time"], "type": "0", "body": "hello rose", "seq": 1}
    for rose_client in (rose_pc, rose_android):
        assert rose_client.wait(MSG)[1] == expected
    assert jack_pc.wait(NOTIFY)[1] == expected
    for client in (jack_android, jack_pc, rose_pc, rose_android):
        client.assert_silent(0.2)


def test_to_res_reaches_only_that_resource(make_users, connect):
    jack, rose = make_users(2)
    jack_pc = connect(jack, "pc")
    rose_pc, rose_android = connect(rose, "pc"), connect(rose, "android")
    jack_pc.message(rose, "only on your phone", msgid="m1", to_res="android")
    assert rose_android.wait(MSG)[1]["to_res"] == "android"
    rose_pc.assert_silent()


def test_offline_recipient_finds_the_message_stored_unreceived(server, make_users, connect):
    jack, rose = make_users(2)
    ack = connect(jack).message(rose, "are you there?", msgid="m1")
    assert stored(server, jack, "m1") == [("are you there?", rose, ack["seq"], 1, 0)]
    given = dict(server.sql("SELECT uid, given_seq FROM im_mailbox WHERE uid IN (%s, %s)", (jack, rose)))
    assert given == {jack: 1, rose: 0}  # §6.12: only what was handed out counts as given


def test_live_delivery_advances_the_recipients_given_position(server, make_users, connect):
    jack, rose = make_users(2)
    rose_pc = connect(rose)
    connect(jack).message(rose, "hi", msgid="m1")
    assert rose_pc.wait(MSG)[1]["seq"] == 1
    assert server.sql("SELECT given_seq FROM im_mailbox WHERE uid = %s", (rose,)) == [(1,)]


def test_retry_gets_the_original_ack_and_is_delivered_once(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc, rose_pc = connect(jack), connect(rose)
    first = jack_pc.message(rose, "once", msgid="m1")
    again = jack_pc.message(rose, "once", msgid="m1")
    changed = jack_pc.message(rose, "a different text", msgid="m1")
    assert first == again == changed
    assert rose_pc.wait(MSG)[1]["body"] == "once"
    rose_pc.assert_silent()
    assert stored(server, jack, "m1") == [("once", rose, 1, 1, 0)]
    assert server.sql("SELECT last_seq FROM im_mailbox WHERE uid = %s", (jack,)) == [(1,)]


def test_retry_in_the_same_batch_is_stored_once(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc, rose_pc = connect(jack), connect(rose)
    for text in ("first", "second", "third"):  # pipelined: they may share one transaction
        jack_pc.send(MSG, {"msgid": "dup", "to": rose, "type": "0", "body": text})
    acks = [jack_pc.ack_for(MSG, "dup") for _ in range(3)]
    assert acks[0] == acks[1] == acks[2] and acks[0]["seq"] == 1
    assert rose_pc.wait(MSG)[1]["body"] == "first"
    rose_pc.assert_silent()
    assert stored(server, jack, "dup") == [("first", rose, 1, 1, 0)]
    next_ack = jack_pc.message(rose, "next", msgid="m2")
    assert next_ack["seq"] == 2  # the duplicates took no position


def test_retries_among_new_messages_take_no_position(server, make_users, connect):
    """A batch holding retries of stored 1:1 and group messages beside new ones: the retries
    get their original ACKs, the new ones the next positions, nothing is stored twice."""
    jack, rose = make_users(2)
    gid = make_group(server, jack, rose)
    jack_pc, rose_pc = connect(jack), connect(rose)
    first = jack_pc.message(rose, "one", msgid="d1")
    first_group = jack_pc.message(gid, "one", group=True, msgid="g1")
    assert [rose_pc.wait(MSG)[1]["seq"] for _ in range(2)] == [1, 1]
    frames = [("d1", rose, "0"), ("d2", rose, "0"), ("g1", gid, "1"), ("g2", gid, "1"),
              ("d3", rose, "0")]
    for msgid, to, kind in frames:  # pipelined: they may share one transaction
        jack_pc.send(MSG, {"msgid": msgid, "to": to, "type": kind, "body": "again " + msgid})
    acks = {msgid: jack_pc.ack_for(MSG, msgid) for msgid, _, _ in frames}
    assert acks["d1"] == first and acks["g1"] == first_group
    assert (acks["d2"]["seq"], acks["d3"]["seq"], acks["g2"]["seq"]) == (2, 3, 2)
    live = [rose_pc.wait(MSG)[1] for _ in range(3)]
    assert sorted((m["msgid"], m["seq"]) for m in live) == [("d2", 2), ("d3", 3), ("g2", 2)]
    rose_pc.assert_silent()
    assert server.sql("SELECT msgid, from_seq, to_seq FROM tp_im_message WHERE msgfrom = %s "
                      "ORDER BY from_seq", (jack,)) == [("d1", 1, 1), ("d2", 2, 2), ("d3", 3, 3)]
    assert server.sql("SELECT msgid, seq FROM tp_im_message_group WHERE gid = %s ORDER BY seq",
                      (gid,)) == [("g1", 1), ("g2", 2)]
    assert server.sql("SELECT last_seq, given_seq FROM im_mailbox WHERE uid = %s", (rose,)) == [(3, 3)]


def test_same_msgid_from_two_senders_is_two_messages(server, make_users, connect):
    jack, tom, rose = make_users(3)
    rose_pc = connect(rose)
    connect(jack).message(rose, "from jack", msgid="same")
    connect(tom).message(rose, "from tom", msgid="same")
    bodies = sorted(rose_pc.wait(MSG)[1]["body"] for _ in range(2))
    assert bodies == ["from jack", "from tom"]
    assert server.sql("SELECT count(*) FROM tp_im_message WHERE msgto = %s", (rose,)) == [(2,)]


def test_message_to_yourself_takes_one_position(server, make_users, connect):
    jack, = make_users(1)
    jack_pc, jack_android, jack_web = connect(jack, "pc"), connect(jack, "android"), connect(jack, "web")
    ack = jack_pc.message(jack, "note to self", msgid="m1")
    assert ack["seq"] == 1
    for other in (jack_android, jack_web):
        frame = other.wait(MSG)[1]
        assert frame["from"] == frame["to"] == jack and frame["seq"] == 1
        other.assert_silent()
    jack_pc.assert_silent()
    assert stored(server, jack, "m1") == [("note to self", jack, 1, 1, 0)]
    assert jack_pc.message(jack, "again", msgid="m2")["seq"] == 2


@pytest.mark.parametrize("body, code", [
    ({"to": "nobody-xyz", "type": "0", "body": "x"}, "no_such_user"),
    ({"to": "ROSE", "type": "0", "body": "x" * 4001}, "body_too_long"),
    ({"type": "0", "body": "x"}, "bad_request"),
    ({"to": "ROSE", "type": "0"}, "bad_request"),
    ({"to": "ROSE", "type": "0", "body": 5}, "bad_request"),
    ({"to": "ROSE", "type": "7", "body": "x"}, "bad_request"),
    ({"to": "ROSE", "type": "0", "body": "x", "to_res": ["pc"]}, "bad_request"),
    ({"to": "ROSE", "type": "0", "body": "nul \x00 char"}, "bad_request"),
    ({"to": "no-such-group", "type": "1", "body": "x"}, "no_such_group"),
])
def test_invalid_messages_are_refused_with_the_right_code(make_users, connect, body, code):
    jack, rose = make_users(2)
    jack_pc = connect(jack)
    if body.get("to") == "ROSE":
        body = {**body, "to": rose}
    assert code_of(jack_pc, body) == code
    assert jack_pc.message(rose, "still connected")["seq"] == 1  # nothing was taken


@pytest.mark.parametrize("msgid", [None, "", "x" * 51, 12])
def test_a_bad_msgid_is_refused_with_an_empty_msgid(make_users, connect, msgid):
    jack, rose = make_users(2)
    jack_pc = connect(jack)
    frame = {"to": rose, "type": 0, "body": "x"}
    if msgid is not None:
        frame["msgid"] = msgid
    jack_pc.send(MSG, frame)
    ack = jack_pc.wait(ACK)[1]
    assert ack["msgid"] == "" and ack["code"] == "bad_request"


def test_integer_type_is_accepted(make_users, connect):
    jack, rose = make_users(2)
    assert connect(jack).message(rose, "x", type=0)["seq"] == 1


def test_strangers_cannot_chat_when_friendship_is_required(make_server, make_users, connect):
    srv = make_server(require_friendship=True)
    jack, rose, tom = make_users(3, srv=srv)
    for a, b in ((jack, rose), (rose, jack)):
        srv.sql("INSERT INTO tp_im_roster_frd (userid, fid, gid) VALUES (%s, %s, '1')", (a, b))
    jack_pc = connect(jack, srv=srv)
    assert code_of(jack_pc, {"to": tom, "type": "0", "body": "hi"}) == "not_friend"
    assert jack_pc.message(rose, "hi friend")["seq"] == 1
    assert jack_pc.message(jack, "note to self")["seq"] == 2


# --- streams under load ----------------------------------------------------------------

def send_stream(client, to: str, bodies: list[str], chunk: int = 100) -> list[dict]:
    """Pipeline the messages `chunk` at a time; returns their ACKs in sending order."""
    acks = []
    for start in range(0, len(bodies), chunk):
        ids = []
        for body in bodies[start:start + chunk]:
            ids.append(new_id())
            client.send(MSG, {"msgid": ids[-1], "to": to, "type": "0", "body": body})
        acks += [client.ack_for(MSG, i, timeout=10) for i in ids]
    return acks


def test_concurrent_senders_get_gapless_commit_ordered_positions(server, make_users, connect):
    senders = make_users(5)
    rose, = make_users(1)
    clients = [connect(s) for s in senders]
    results: dict[str, list[dict]] = {}

    def run(client):
        results[client.uid] = send_stream(client, rose, [f"{client.uid} {i}" for i in range(50)], 25)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for sender in senders:
        assert [a["seq"] for a in results[sender]] == list(range(1, 51))
    rows = server.sql("SELECT to_seq, msgfrom, msg FROM tp_im_message WHERE msgto = %s ORDER BY to_seq", (rose,))
    assert [r[0] for r in rows] == list(range(1, 251))
    for sender in senders:  # each sender's messages keep their order in rose's mailbox
        assert [r[2] for r in rows if r[1] == sender] == [f"{sender} {i}" for i in range(50)]


def test_a_thousand_messages_arrive_once_in_order(make_users, connect):
    jack, rose = make_users(2)
    jack_pc, rose_pc = connect(jack), connect(rose)
    received: list[dict] = []

    def read():
        while len(received) < 1000:
            received.append(rose_pc.wait(MSG, timeout=10)[1])

    reader = threading.Thread(target=read)
    reader.start()
    acks = send_stream(jack_pc, rose, [str(i) for i in range(1000)])
    reader.join(30)
    assert [a["seq"] for a in acks] == list(range(1, 1001))
    assert [m["seq"] for m in received] == list(range(1, 1001))
    assert [m["body"] for m in received] == [str(i) for i in range(1000)]
    rose_pc.assert_silent()


def test_a_sender_far_ahead_of_a_stalled_writer_is_held_back_and_loses_nothing(
        server, make_users, connect):
    """More messages in flight than a connection's window (chat.WINDOW, 256) while the writer
    waits on a lock: those past the window wait for room, and every one is stored, ACKed and
    delivered in order once the writer goes on."""
    jack, rose = make_users(2)
    jack_pc, rose_pc = connect(jack), connect(rose)
    jack_pc.message(rose, "first")
    rose_pc.wait(MSG)
    lock = psycopg2.connect(server.database_url)
    try:
        with lock.cursor() as cur:
            cur.execute("SELECT 1 FROM im_mailbox WHERE uid = %s FOR UPDATE", (jack,))
        ids = [new_id() for _ in range(600)]
        jack_pc.send_bytes(b"".join(protocol.encode(MSG, {"msgid": i, "to": rose, "type": "0",
                                                          "body": str(n)})
                                    for n, i in enumerate(ids)))
        jack_pc.assert_silent(0.5)  # nothing is acknowledged before it is stored
    finally:
        lock.rollback()
        lock.close()
    acks = [jack_pc.ack_for(MSG, i, timeout=20) for i in ids]
    assert [a["seq"] for a in acks] == list(range(2, 602))
    received = [rose_pc.wait(MSG, timeout=10)[1]["body"] for _ in ids]
    assert received == [str(n) for n in range(600)]


# --- groups ----------------------------------------------------------------------------

def test_group_message_reaches_every_member_connection_but_the_senders(server, make_users, connect):
    jack, rose, tom, eve = make_users(4)
    gid = make_group(server, jack, rose, tom)
    jack_pc, jack_android = connect(jack, "pc"), connect(jack, "android")
    others = [connect(u, r) for u in (rose, tom) for r in ("pc", "android")]
    eve_pc = connect(eve)

    ack = jack_pc.message(gid, "hello team", group=True, msgid="g1")
    assert ack["seq"] == 1
    expected = {"msgid": "g1", "from": jack, "from_res": "pc", "to": gid, "to_res": "",
                "time": ack["time"], "type": "1", "body": "hello team", "seq": 1}
    for client in [jack_android, *others]:
        assert client.wait(MSG)[1] == expected
    assert others[0].message(gid, "hi jack", group=True)["seq"] == 2
    assert jack_pc.wait(MSG)[1]["seq"] == 2
    jack_pc.assert_silent()
    eve_pc.assert_silent()

    assert code_of(eve_pc, {"to": gid, "type": "1", "body": "let me in"}) == "not_member"
    assert jack_pc.message(gid, "hello team", group=True, msgid="g1") == ack  # a retry
    rows = server.sql("SELECT seq, msgfrom FROM tp_im_message_group WHERE gid = %s ORDER BY seq", (gid,))
    assert rows == [(1, jack), (2, rose)]
    given = server.sql("SELECT userid, given_seq FROM tp_im_group_peer WHERE gid = %s", (gid,))
    assert dict(given) == {jack: 2, rose: 2, tom: 2}


# --- receipts --------------------------------------------------------------------------

def receipt(client, **body) -> None:
    client.send(ACK, body)


def received_flags(server, sender: str, *msgids: str) -> list[tuple]:
    return server.sql("SELECT msgid, received FROM tp_im_message WHERE msgfrom = %s "
                      "AND msgid = ANY(%s) ORDER BY msgid", (sender, list(msgids)))


def test_receipts_by_msgid_mark_only_the_addressees_messages(server, make_users, connect):
    jack, rose, tom = make_users(3)
    jack_pc, rose_pc, tom_pc = connect(jack), connect(rose), connect(tom)
    for msgid in ("a", "b"):
        jack_pc.message(rose, "hi", msgid=msgid)
    jack_pc.message(tom, "hi", msgid="t")

    receipt(tom_pc, type=196609, msgid="a", **{"from": jack})  # not tom's message
    receipt(tom_pc, type="196609", msgid="unknown")
    tom_pc.heartbeat()
    receipt(rose_pc, type=196609, msgid="b")
    assert eventually("SELECT msgid, received FROM tp_im_message WHERE msgfrom = %s ORDER BY msgid",
                      (jack,), [("a", 0), ("b", 1), ("t", 0)], server) == [("a", 0), ("b", 1), ("t", 0)]
    receipt(rose_pc, type="196609", msgid="a", **{"from": jack})
    assert eventually("SELECT received FROM tp_im_message WHERE msgfrom = %s AND msgid = 'a'",
                      (jack,), [(1,)], server) == [(1,)]
    for client in (rose_pc, tom_pc):
        client.assert_silent(match=ACK)  # receipts get no ACK, unknown ids included


def test_receipt_upto_never_passes_what_was_given(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc = connect(jack)
    for msgid in ("1", "2"):
        jack_pc.message(rose, "while you were away", msgid=msgid)
    rose_pc = connect(rose)
    jack_pc.message(rose, "now you are here", msgid="3")
    assert rose_pc.wait(MSG)[1]["seq"] == 3
    jack_pc.message(rose, "offline again", msgid="4", to_res="elsewhere")
    receipt(rose_pc, type=196609, upto=10)
    # Messages 1-3 are at or below the given position (3): marked; 4 was never given.
    expected = [("1", 1), ("2", 1), ("3", 1), ("4", 0)]
    assert eventually("SELECT msgid, received FROM tp_im_message WHERE msgfrom = %s ORDER BY msgid",
                      (jack,), expected, server) == expected


def test_receipts_of_friend_requests_and_invitations(server, make_users, connect):
    jack, rose = make_users(2)
    gid = make_group(server, jack)
    server.sql("INSERT INTO tp_im_roster_req (msgid, msgfrom, msgto, msg) VALUES ('fr', %s, %s, 'hi')", (jack, rose))
    server.sql("INSERT INTO tp_im_group_req (msgid, msgfrom, msgto, gid) VALUES ('gi', %s, %s, %s)", (jack, rose, gid))
    jack_pc, rose_pc = connect(jack), connect(rose)
    receipt(jack_pc, type=200705, msgid="fr")  # jack is not the addressee
    jack_pc.heartbeat()
    receipt(rose_pc, type="200705", msgid="fr", **{"from": jack})
    receipt(rose_pc, type=200709, msgid="gi")
    query = ("SELECT (SELECT received FROM tp_im_roster_req WHERE msgfrom = %s AND msgid = 'fr'), "
             "(SELECT received FROM tp_im_group_req WHERE msgfrom = %s AND msgid = 'gi')")
    assert eventually(query, (jack, jack), [(1, 1)], server) == [(1, 1)]


@pytest.mark.parametrize("body", [{"type": 1234, "msgid": "x"}, {"type": 196609},
                                  {"type": 196609, "upto": "many"}, {"msgid": "x"}])
def test_malformed_receipts_are_bad_requests(make_users, connect, body):
    jack, = make_users(1)
    jack_pc = connect(jack)
    receipt(jack_pc, **body)
    assert jack_pc.wait(ACK)[1]["code"] == "bad_request"
    assert jack_pc.heartbeat()
