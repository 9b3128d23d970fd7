"""Groups over HTTP (PROTOCOL.md §2.4, §6.9, §6.14): creating, listing, member pages."""

import re

from im import protocol
from im.client import rows

CHATROOM = protocol.IM_CHATROOM


def http_for(server, uid: str):
    http = server.http()
    http.login(uid, "pw")
    return http


def create_group(http, gname: str = "team", **params) -> str:
    return http.qid("QID_IM_SET_GROUP", gname=gname, **params)["result"]


def error_of(http, qid: str, **params) -> tuple[int, str, str]:
    status, body, _ = http.call("POST", f"/api/{qid}", params)
    return status, body.get("code"), body.get("err", "")


def test_jack_creates_groups_and_lists_them(server, make_users):
    jack, rose = make_users(2)
    http = http_for(server, jack)
    team = create_group(http, "team")
    club = create_group(http, "club", type="2", exit=0)
    assert re.fullmatch(r"\d+", team) and team != club

    listed = {g["gid"]: g for g in rows(http.qid("QID_IM_GET_GROUP_LIST"))}
    assert set(listed) == {team, club}
    assert listed[team] == {"gid": team, "gname": "team", "userid": jack,
                            "time": listed[team]["time"], "type": "1", "exit": "1",
                            "right": "1", "seq": "0"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", listed[team]["time"])
    assert (listed[club]["type"], listed[club]["exit"], listed[club]["right"]) == ("2", "0", "1")
    assert server.sql("SELECT userid, \"right\" FROM tp_im_group_peer WHERE gid = %s",
                      (team,)) == [(jack, "1")]

    assert rows(http_for(server, rose).qid("QID_IM_GET_GROUP_LIST")) == []


def test_creating_a_group_checks_its_parameters(server, make_users):
    jack, = make_users(1)
    http = http_for(server, jack)
    for params, field in (({}, "gname"), ({"gname": ""}, "gname"),
                          ({"gname": "x" * 501}, "gname"), ({"gname": "g", "type": 3}, "type"),
                          ({"gname": "g", "exit": "x"}, "exit"), ({"gname": ["g"]}, "gname")):
        status, code, err = error_of(http, "QID_IM_SET_GROUP", **params)
        assert (status, code) == (400, "bad_request"), params
        assert field in err, (params, err)
    assert create_group(http, "x" * 500)
    assert len(rows(http.qid("QID_IM_GET_GROUP_LIST"))) == 1


def test_member_list_pages_by_join_order(server, make_users, connect):
    jack, *others = make_users(6)
    http = http_for(server, jack)
    gid = create_group(http, "open", type=2)
    for uid in others:
        connect(uid).request(CHATROOM, {"type": "5", "gid": gid, "fname": f"nick-{uid}"})

    everyone = rows(http.qid("QID_IM_GET_GROUP_PEER_LIST", gid=gid))
    assert [m["uid"] for m in everyone] == [jack, *others]
    assert everyone[1] == {"uid": others[0], "fname": f"nick-{others[0]}", "right": "0",
                           "join_time": everyone[1]["join_time"]}
    assert everyone[0]["right"] == "1"

    first = http.qid("QID_IM_GET_GROUP_PEER_LIST", gid=gid, limit=4)
    rest = http.qid("QID_IM_GET_GROUP_PEER_LIST", gid=gid, offset=4, limit=4)
    assert first["more"] == "1" and rest["more"] == "0"
    assert [m["uid"] for m in rows(first) + rows(rest)] == [jack, *others]

    for params, field in (({"limit": 5001}, "limit"), ({"limit": 0}, "limit"),
                          ({"offset": -1}, "offset"), ({"limit": "many"}, "limit")):
        status, code, err = error_of(http, "QID_IM_GET_GROUP_PEER_LIST", gid=gid, **params)
        assert (status, code) == (400, "bad_request") and field in err, params


def test_member_list_of_a_private_group_is_for_members(server, make_users):
    jack, rose = make_users(2)
    jack_http, rose_http = http_for(server, jack), http_for(server, rose)
    private = create_group(jack_http, "secret")
    public = create_group(jack_http, "lobby", type=2)

    assert error_of(rose_http, "QID_IM_GET_GROUP_PEER_LIST", gid=private)[:2] == (403, "not_member")
    assert [m["uid"] for m in rows(rose_http.qid("QID_IM_GET_GROUP_PEER_LIST", gid=public))] == [jack]
    assert error_of(rose_http, "QID_IM_GET_GROUP_PEER_LIST", gid="999999999")[:2] == \
        (404, "no_such_group")
    status, code, err = error_of(rose_http, "QID_IM_GET_GROUP_PEER_LIST")
    assert (status, code) == (400, "bad_request") and "gid" in err


def test_group_qids_need_a_token(server):
    anonymous = server.http()
    for qid in ("QID_IM_SET_GROUP", "QID_IM_GET_GROUP_LIST", "QID_IM_GET_GROUP_PEER_LIST"):
        assert error_of(anonymous, qid, gname="g", gid="1")[:2] == (401, "not_authenticated")
