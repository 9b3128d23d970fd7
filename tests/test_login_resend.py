"""The re-send at login (PROTOCOL.md §1.5), one read for friend requests and group invitations:
rose was away while jack and tom asked for her friendship and jack invited her to two groups,
one of which he dismissed before she came back."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from im import protocol
from im.client import RequestFailed, rows
from support import PASSWORD

REQ, CHATROOM = protocol.IM_ROSTER_ADD_REQ, protocol.IM_CHATROOM


def test_token_login_gets_requests_then_live_invitations(server, make_users, connect):
    jack, tom, rose = make_users(3)
    jack_pc, tom_pc = connect(jack), connect(tom)
    jack_http = server.http(jack_pc.token)
    kept = jack_http.qid("QID_IM_SET_GROUP", gname="kept")["result"]
    gone = jack_http.qid("QID_IM_SET_GROUP", gname="gone")["result"]
    for gid in (kept, gone):
        jack_pc.request(CHATROOM, {"msgid": f"inv-{gid}", "type": "0", "gid": gid, "to": rose})
    jack_pc.request(REQ, {"msgid": "j1", "to": rose, "msg": "jack here"})
    tom_pc.request(REQ, {"msgid": "t1", "to": rose, "msg": "tom here"})
    jack_pc.request(CHATROOM, {"msgid": "bye", "type": "4", "gid": gone})

    token = server.http().login(rose, PASSWORD)
    with server.client() as rose_phone:
        rose_phone.login(rose, token=token, res="phone")
        seen = [(mt, body) for mt, body in rose_phone.drain(0.5) if mt in (REQ, CHATROOM)]

    assert [(mt, body["from"], body["msgid"]) for mt, body in seen] == \
        [(REQ, jack, "j1"), (REQ, tom, "t1"), (CHATROOM, jack, f"inv-{kept}")]
    assert seen[0][1]["msg"] == "jack here" and seen[0][1]["to_res"] == "phone"
    assert seen[2][1] == {"msgid": f"inv-{kept}", "type": "0", "from": jack, "from_res": "",
                          "to": rose, "to_res": "phone", "gid": kept, "gname": "kept"}
    pending = rows(server.http(token).qid("QID_IM_GET_PENDING_REQ"))
    assert len(pending) == 3  # nothing answered by the re-send itself


def test_logins_at_once_each_get_their_own_resends(server, make_users, connect):
    """Token checks and re-send reads made at the same moment share queries: every login still
    gets only its own requests, and a bad token among them is refused alone."""
    asker, *targets = make_users(13)
    asker_pc = connect(asker)
    for i, uid in enumerate(targets):
        asker_pc.request(REQ, {"msgid": f"r{i}", "to": uid, "msg": f"hello {i}"})
    tokens = [server.http().login(uid, PASSWORD) for uid in targets]
    clients = [server.client(timeout=30) for _ in range(len(targets) + 1)]
    barrier = threading.Barrier(len(clients))

    def log_in(k: int):
        barrier.wait()
        if k == len(targets):
            with pytest.raises(RequestFailed) as refused:
                clients[k].login(targets[0], token="not-a-token", res="x")
            return refused.value.code
        clients[k].login(targets[k], token=tokens[k], res="phone")
        return [(body["from"], body["msgid"]) for mt, body in clients[k].drain(0.5) if mt == REQ]

    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            outcomes = list(pool.map(log_in, range(len(clients))))
    finally:
        for c in clients:
            c.close()
    assert outcomes[:-1] == [[(asker, f"r{i}")] for i in range(len(targets))]
    assert outcomes[-1] == "auth_failed"
