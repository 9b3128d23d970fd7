"""Pending requests over HTTP (PROTOCOL.md §2.6): what still waits for an answer, both ways.

Requests are stored straight into the database as the TCP request paths store them.
"""

import secrets

from im.client import rows
from test_roster_qids import api, assert_needs_token, refused

FIELDS = ["kind", "dir", "msgid", "from", "to", "gid", "gname", "msg", "time"]


def friend_request(server, frm: str, to: str, msg: str, state: int = 0, order: int = 0) -> str:
    msgid = secrets.token_hex(6)
    server.sql("""INSERT INTO tp_im_roster_req (msgid, msg, state, msgfrom, msgto, send_time)
                  VALUES (%s, %s, %s, %s, %s, now() - %s * interval '1 minute')""",
               (msgid, msg, state, frm, to, 60 - order))
    return msgid


def invitation(server, frm: str, to: str, gid: str, state: int = 0, order: int = 0) -> str:
    msgid = secrets.token_hex(6)
    server.sql("""INSERT INTO tp_im_group_req (msgid, state, msgfrom, msgto, gid, gname, send_time)
                  VALUES (%s, %s, %s, %s, %s, 'old name', now() - %s * interval '1 minute')""",
               (msgid, state, frm, to, gid, 60 - order))
    return msgid


def group(server, owner: str, gname: str, dismissed: bool = False) -> str:
    gid = "p" + secrets.token_hex(6)
    server.sql("INSERT INTO tp_im_group (gid, gname, userid, dismissed) VALUES (%s, %s, %s, %s)",
               (gid, gname, owner, dismissed))
    return gid


def test_jack_sees_what_waits_for_him_and_what_he_waits_for(server, make_users):
    jack, rose, tom = make_users(3)
    team, gone = group(server, rose, "team"), group(server, rose, "gone", dismissed=True)
    to_rose = friend_request(server, jack, rose, "hi rose", order=1)
    from_tom = friend_request(server, tom, jack, "hi jack", order=2)
    to_team = invitation(server, rose, jack, team, order=3)
    invite_tom = invitation(server, jack, tom, team, order=4)
    # answered requests and invitations to a dismissed group are not pending
    friend_request(server, rose, jack, "answered", state=1)
    invitation(server, rose, jack, team, state=2)
    invitation(server, rose, jack, gone)

    result = api(server, jack).qid("QID_IM_GET_PENDING_REQ")
    assert result["type"] == "table" and result["more"] == "0"
    got = rows(result)
    assert all(list(r) == FIELDS and r["time"] for r in got)
    assert [{k: v for k, v in r.items() if k != "time"} for r in got] == [
        {"kind": "friend", "dir": "out", "msgid": to_rose, "from": jack, "to": rose, "gid": "",
         "gname": "", "msg": "hi rose"},
        {"kind": "friend", "dir": "in", "msgid": from_tom, "from": tom, "to": jack, "gid": "",
         "gname": "", "msg": "hi jack"},
        {"kind": "group", "dir": "in", "msgid": to_team, "from": rose, "to": jack, "gid": team,
         "gname": "team", "msg": ""},
        {"kind": "group", "dir": "out", "msgid": invite_tom, "from": jack, "to": tom, "gid": team,
         "gname": "team", "msg": ""},
    ]
    # rose sees only her side of it
    assert [(r["kind"], r["dir"], r["msgid"]) for r in rows(api(server, rose).qid(
        "QID_IM_GET_PENDING_REQ"))] == [("friend", "in", to_rose), ("group", "out", to_team)]


def test_pending_requests_come_in_pages(server, make_users):
    jack, *others = make_users(4)
    for i, other in enumerate(others):
        friend_request(server, other, jack, f"request {i}", order=i)
    http = api(server, jack)
    page = http.qid("QID_IM_GET_PENDING_REQ", limit=2)
    assert ([r["msg"] for r in rows(page)], page["more"]) == (["request 0", "request 1"], "1")
    refused(http, "QID_IM_GET_PENDING_REQ", 400, "bad_request", "limit", limit=0)
    refused(http, "QID_IM_GET_PENDING_REQ", 400, "bad_request", "limit", limit=5001)


def test_pending_requests_need_a_token(server):
    assert_needs_token(server, ["QID_IM_GET_PENDING_REQ"])
