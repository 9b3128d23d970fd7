"""Friends over TCP (PROTOCOL.md §1.7, §1.5 re-send, §6.3, §6.10): jack asks, rose answers."""

import json
import time

import pytest

from im import protocol
from im.client import Client, RequestFailed

REQ, RESP, DEL = protocol.IM_ROSTER_ADD_REQ, protocol.IM_ROSTER_ADD_RESP, protocol.IM_ROSTER_DEL_REQ
NOTIFY_ADD, NOTIFY_DEL = protocol.IM_NOTIFY_ROSTER_ADD, protocol.IM_NOTIFY_ROSTER_DEL


def ask(client: Client, to: str, msgid: str, msg: str = "hello") -> dict:
    return client.request(REQ, {"msgid": msgid, "to": to, "time": "2015-01-30 12:23:00", "msg": msg})


def answer(client: Client, msgid: str, requester: str | None = None, state: str = "1", **names) -> dict:
    body = {"msgid": msgid, "state": state, "msg": json.dumps(names)}
    if requester is not None:
        body["to"] = requester
    return client.request(RESP, body)


def befriend(asker: Client, answerer: Client, msgid: str = "befriend") -> None:
    """asker asks, answerer accepts; both have seen IM_NOTIFY_ROSTER_ADD afterwards."""
    ask(asker, answerer.uid, msgid)
    answer(answerer, msgid, asker.uid)
    asker.wait(NOTIFY_ADD, frd=answerer.uid)
    answerer.wait(NOTIFY_ADD, frd=asker.uid)
    asker.drain(0.1)
    answerer.drain(0.1)


def fails(code: str, fn, *args, **kw) -> None:
    with pytest.raises(RequestFailed) as err:
        fn(*args, **kw)
    assert err.value.code == code, err.value.ack


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def friend_rows(server, *uids: str) -> list[tuple]:
    return server.sql("""SELECT userid, fid, gid, fname FROM tp_im_roster_frd
                         WHERE userid = ANY(%s) ORDER BY userid""", (list(uids),))


def request_row(server, sender: str, msgid: str) -> list[tuple]:
    return server.sql("SELECT msgto, msg, state, received FROM tp_im_roster_req "
                      "WHERE msgfrom = %s AND msgid = %s", (sender, msgid))


def test_request_reaches_every_resource_and_a_retry_changes_nothing(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc = connect(jack, res="android")
    rose_pc, rose_phone = connect(rose, res="pc"), connect(rose, res="iphone")

    ack = ask(jack_pc, rose, "r1", "can we be friends?")
    for conn in (rose_pc, rose_phone):
        _, frame = conn.wait(REQ, msgid="r1")
        assert frame == {"msgid": "r1", "from": jack, "from_res": "android", "to": rose,
                         "to_res": conn.res, "time": ack["time"], "msg": "can we be friends?"}
    assert request_row(server, jack, "r1") == [(rose, "can we be friends?", 0, 0)]

    retry = ask(jack_pc, rose, "r1", "different text")
    assert retry["time"] == ack["time"]
    rose_pc.assert_silent()
    rose_phone.assert_silent()
    assert request_row(server, jack, "r1") == [(rose, "can we be friends?", 0, 0)]


def test_bad_requests_are_refused(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc = connect(jack)
    fails("bad_request", ask, jack_pc, jack, "self")
    fails("no_such_user", ask, jack_pc, jack + "_nobody", "ghost")
    fails("body_too_long", ask, jack_pc, rose, "long", "x" * 501)
    fails("bad_request", jack_pc.request, REQ, {"msgid": "nobody", "msg": "hi"})
    jack_pc.send(REQ, {"to": rose, "msg": "no msgid"})
    _, ack = jack_pc.wait(protocol.IM_MESSAGE_ACK, type=str(REQ))
    assert (ack["msgid"], ack["code"]) == ("", "bad_request")
    assert server.sql("SELECT count(*) FROM tp_im_roster_req WHERE msgfrom = %s", (jack,)) == [(0,)]


def test_accept_makes_friends_on_every_resource_then_presence(server, make_users, connect):
    jack, rose = make_users(2)
    server.sql("""UPDATE tp_im_roster SET grp = '[{"gid":"1","n":"friends","w":0,"def":true},
                  {"gid":"7","n":"work","w":1,"def":false}]' WHERE userid = %s""", (rose,))
    jack_pc, jack_phone = connect(jack, res="pc"), connect(jack, res="android")
    rose_pc, rose_phone = connect(rose, res="pc"), connect(rose, res="iphone")
    jack_pc.request(protocol.IM_PRESENCE, {"type": "online", "show": "dnd"})
    rose_phone.request(protocol.IM_PRESENCE, {"type": "online", "show": "chat"})
    ask(jack_pc, rose, "r2")

    answer(rose_pc, "r2", jack, req_gid="no-such-group", req_name="Rosie", resp_gid="7",
           resp_name="Jack")
    assert friend_rows(server, jack, rose) == [(jack, rose, "1", "Rosie"), (rose, jack, "7", "Jack")]
    assert request_row(server, jack, "r2")[0][2] == 1
    for conn, other in ((jack_pc, rose), (jack_phone, rose), (rose_pc, jack), (rose_phone, jack)):
        conn.wait(NOTIFY_ADD, frd=other)
    _, seen_by_rose = rose_phone.wait(protocol.IM_PRESENCE, **{"from": jack})
    assert seen_by_rose == {"type": "online", "from": jack, "from_res": "pc", "to": rose,
                            "to_res": "iphone", "show": "dnd"}
    _, seen_by_jack = jack_pc.wait(protocol.IM_PRESENCE, **{"from": rose})
    assert (seen_by_jack["from_res"], seen_by_jack["show"]) == ("iphone", "chat")
    jack_phone.assert_silent(match=protocol.IM_PRESENCE)  # never announced: invisible and deaf

    fails("already_friends", ask, jack_pc, rose, "r3")
    fails("already_friends", ask, rose_pc, jack, "r4")


def test_reject_is_forwarded_to_the_requester(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc, rose_pc = connect(jack), connect(rose)
    ask(jack_pc, rose, "r5")
    answer(rose_pc, "r5", state="2")
    _, frame = jack_pc.wait(RESP, msgid="r5")
    assert frame == {"msgid": "r5", "from": rose, "to": jack, "state": "2"}
    assert request_row(server, jack, "r5")[0][2] == 2
    assert friend_rows(server, jack, rose) == []
    jack_pc.assert_silent(match=NOTIFY_ADD)


def test_only_the_addressee_answers_and_only_once(server, make_users, connect):
    jack, rose, tom = make_users(3)
    jack_pc, rose_pc, tom_pc = connect(jack), connect(rose), connect(tom)
    ask(jack_pc, rose, "r6")

    fails("forbidden", answer, tom_pc, "r6", jack)
    fails("forbidden", answer, jack_pc, "r6", jack)
    fails("not_found", answer, tom_pc, "r6")
    assert request_row(server, jack, "r6")[0][2] == 0
    assert friend_rows(server, jack, rose, tom) == []

    fails("bad_request", rose_pc.request, RESP, {"msgid": "r6", "to": jack, "msg": "{not json"})
    fails("bad_request", rose_pc.request, RESP, {"msgid": "r6", "to": jack, "state": "3"})
    fails("not_found", answer, rose_pc, "r6", tom)
    answer(rose_pc, "r6", jack)
    fails("already_handled", answer, rose_pc, "r6", jack)
    fails("already_handled", answer, rose_pc, "r6")
    assert len(friend_rows(server, jack, rose)) == 2


def test_an_answer_without_requester_needs_a_unique_msgid(server, make_users, connect):
    jack, tom, rose = make_users(3)
    jack_pc, tom_pc, rose_pc = connect(jack), connect(tom), connect(rose)
    ask(jack_pc, rose, "same")
    ask(tom_pc, rose, "same")
    fails("bad_request", answer, rose_pc, "same")
    answer(rose_pc, "same", tom, state="2")
    answer(rose_pc, "same")  # now the only unhandled one: jack's
    jack_pc.wait(NOTIFY_ADD, frd=rose)
    assert [r[1] for r in friend_rows(server, jack)] == [rose]


def test_delete_friend_tells_everyone_but_the_requesting_connection(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc, jack_phone = connect(jack, res="pc"), connect(jack, res="android")
    rose_pc, rose_phone = connect(rose, res="pc"), connect(rose, res="iphone")
    befriend(jack_pc, rose_pc)
    for conn in (jack_phone, rose_phone):
        conn.drain(0.1)

    jack_pc.request(DEL, {"msgid": "d1", "to": rose, "time": "2015-01-30 12:23:00"})
    assert friend_rows(server, jack, rose) == []
    jack_phone.wait(NOTIFY_DEL, frd=rose)
    rose_pc.wait(NOTIFY_DEL, frd=jack)
    rose_phone.wait(NOTIFY_DEL, frd=jack)
    jack_pc.assert_silent(match=NOTIFY_DEL)
    fails("not_friend", jack_pc.request, DEL, {"msgid": "d2", "to": rose})
    ask(jack_pc, rose, "again")  # no longer friends: asking again is allowed


def test_pending_request_comes_again_at_each_login_until_receipted(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc = connect(jack)
    ask(jack_pc, rose, "p1", "while you were away")
    ask(jack_pc, rose, "p2", "answered already")

    first = connect(rose, res="pc")
    answer(first, "p2", jack, state="2")
    first.close()
    for res in ("phone", "tablet"):  # every login gets the unanswered, unreceipted request again
        conn = connect(rose, res=res)
        _, frame = conn.wait(REQ, msgid="p1")
        assert (frame["from"], frame["to"], frame["to_res"], frame["msg"]) == \
            (jack, rose, res, "while you were away")
        conn.assert_silent(match=REQ)

    conn.send(protocol.IM_MESSAGE_ACK, {"type": REQ, "msgid": "p1", "from": jack})
    wait_until(lambda: request_row(server, jack, "p1")[0][3] == 1)
    connect(rose, res="laptop").assert_silent(match=REQ)
