"""Roster over HTTP (PROTOCOL.md §2.2): friends, friend groups, sign, avatar, remarks.

Friendships are written straight into the database here (the TCP friend flow is tested
elsewhere); what a user observes is what the QIDs answer.
"""

import json

import pytest

from support import PASSWORD

ROSTER_QIDS = ("QID_IM_GET_ROSTER_ALL", "QID_IM_SET_ROSTER_GRP", "QID_IM_SET_ROSTER_SIGN",
               "QID_IM_SET_ROSTER_AVATAR", "QID_IM_SET_ROSTER_FRD_GID",
               "QID_IM_SET_ROSTER_FRD_NAME")
DEFAULT_GRP = [{"gid": "1", "n": "我的好友", "w": 0, "def": True}]


# --- helpers shared by the QID test modules ---------------------------------------------

def api(server, uid: str):
    """An HTTP client logged in as uid."""
    http = server.http()
    http.login(uid, PASSWORD)
    return http


def ok(http, qid: str, /, **params) -> dict:
    """Call a QID that must succeed (any parameter name, even `name`)."""
    status, body, _ = http.call("POST", f"/api/{qid}", params)
    assert status == 200, body
    return body


def refused(http, qid: str, status: int, code: str, field: str | None = None, /,
            **params) -> dict:
    """Call a QID that must fail with this status and code (and name `field` in its text)."""
    got, body, _ = http.call("POST", f"/api/{qid}", params)
    assert (got, body.get("code")) == (status, code), body
    if field is not None:
        assert body["err"].startswith(f"{field}:"), body
    return body


def assert_needs_token(server, names) -> None:
    for name in names:
        status, body, _ = server.http().call("POST", f"/api/{name}", {})
        assert (status, body["code"]) == (401, "not_authenticated"), name
        status, body, _ = server.http("not-a-token").call("POST", f"/api/{name}", {})
        assert (status, body["code"]) == (401, "not_authenticated"), name


def befriend(server, a: str, b: str, gid: str = "1") -> None:
    """Make a and b friends, each filed under `gid`, as an accepted request leaves them."""
    server.sql("""INSERT INTO tp_im_roster_frd (userid, fid, gid) VALUES (%s, %s, %s), (%s, %s, %s)""",
               (a, b, gid, b, a, gid))


def contacts_ver(server, uid: str) -> tuple[int, int]:
    """(the user's contacts version stamp, the global contacts version)."""
    return server.sql("""SELECT u.ver, v.ver FROM im_user u, im_version v
                         WHERE u.uid = %s AND v.name = 'contacts'""", (uid,))[0]


def roster(http) -> tuple[dict, dict]:
    """QID_IM_GET_ROSTER_ALL as {fid: friend} and the ext header with grp decoded."""
    result = http.qid("QID_IM_GET_ROSTER_ALL")
    assert result["type"] == "text"
    ext = dict(result["ext"], grp=json.loads(result["ext"]["grp"]))
    return {f["fid"]: f for f in json.loads(result["result"])}, ext


# --- tests ----------------------------------------------------------------------------

def test_jack_sees_his_friends_with_their_own_name_sign_and_avatar(server, make_users):
    jack, rose, tom = make_users(3)
    server.admin().admin("PATCH", f"/users/{rose}", {"name": "Rose"})
    befriend(server, jack, rose)
    rose_api, jack_api = api(server, rose), api(server, jack)
    assert rose_api.qid("QID_IM_SET_ROSTER_SIGN", sign="哎哟,不错哦")["result"] == "1"
    assert rose_api.qid("QID_IM_SET_ROSTER_AVATAR", avatar="/file/rose.jpg")["result"] == "1"
    jack_api.qid("QID_IM_SET_ROSTER_SIGN", sign="busy")

    friends, ext = roster(jack_api)
    assert friends == {rose: {"fid": rose, "gid": "1", "fname": "", "name": "Rose",
                              "sign": "哎哟,不错哦", "avatar": "/file/rose.jpg"}}
    assert ext == {"avatar": "", "grp": DEFAULT_GRP, "sign": "busy"}
    assert roster(api(server, tom)) == ({}, {"avatar": "", "grp": DEFAULT_GRP, "sign": ""})


def test_removing_a_group_moves_its_friends_to_the_default_group(server, make_users):
    jack, rose, tom = make_users(3)
    befriend(server, jack, rose)
    befriend(server, jack, tom)
    http = api(server, jack)
    two = [{"gid": "1", "n": "friends", "w": 0, "def": True}, {"gid": "2", "n": "work", "w": 1}]
    assert http.qid("QID_IM_SET_ROSTER_GRP", grp=json.dumps(two))["result"] == "1"
    http.qid("QID_IM_SET_ROSTER_FRD_GID", fid=rose, gid="2")
    assert roster(http)[0][rose]["gid"] == "2"

    # jack drops "work" and makes a new default group "all": rose moves there, tom stays in 1
    new = [{"gid": "1", "n": "friends", "w": "0"}, {"gid": 3, "n": "all", "w": 2, "def": "1"}]
    http.qid("QID_IM_SET_ROSTER_GRP", grp=json.dumps(new))
    friends, ext = roster(http)
    assert {fid: f["gid"] for fid, f in friends.items()} == {rose: "3", tom: "1"}
    assert ext["grp"] == [{"gid": "1", "n": "friends", "w": 0, "def": False},
                          {"gid": "3", "n": "all", "w": 2, "def": True}]
    # and rose's own roster is untouched
    assert roster(api(server, rose))[0][jack]["gid"] == "1"


@pytest.mark.parametrize("grp", [
    "not json", "[]", '{"gid": "1", "def": true}', '["1"]',
    json.dumps([{"gid": "1", "def": True}, {"gid": "2", "def": True}]),
    json.dumps([{"gid": "1"}, {"gid": "2"}]),
    json.dumps([{"gid": "1", "def": True}, {"gid": "1"}]),
    json.dumps([{"gid": "", "def": True}]),
    json.dumps([{"gid": "g" * 51, "def": True}]),
    json.dumps([{"gid": "1", "n": "n" * 51, "def": True}]),
    json.dumps([{"gid": "1", "w": "heavy", "def": True}]),
    json.dumps([{"gid": "1", "def": "maybe"}]),
    json.dumps([{"gid": str(i), "n": "n" * 50, "def": i == 0} for i in range(90)]),
])
def test_a_bad_group_list_is_refused_and_changes_nothing(server, make_users, grp):
    jack, = make_users(1)
    http = api(server, jack)
    refused(http, "QID_IM_SET_ROSTER_GRP", 400, "bad_request", "grp", grp=grp)
    assert roster(http)[1]["grp"] == DEFAULT_GRP


def test_sign_and_avatar_are_limited_and_bump_the_contacts_version(server, make_users):
    jack, = make_users(1)
    http = api(server, jack)
    for name, field in (("QID_IM_SET_ROSTER_SIGN", "sign"), ("QID_IM_SET_ROSTER_AVATAR", "avatar")):
        refused(http, name, 400, "bad_request", field)
        refused(http, name, 400, "bad_request", field, **{field: "x" * 501})
        refused(http, name, 400, "bad_request", field, **{field: ["x"]})
        before, _ = contacts_ver(server, jack)
        http.qid(name, **{field: "y" * 500})
        stamp, current = contacts_ver(server, jack)
        assert before < stamp <= current
    assert roster(http)[1]["sign"] == "y" * 500


def test_jack_files_and_renames_a_friend_but_not_a_stranger(server, make_users):
    jack, rose, tom = make_users(3)
    befriend(server, jack, rose)
    http = api(server, jack)
    http.qid("QID_IM_SET_ROSTER_GRP", grp=json.dumps(DEFAULT_GRP + [{"gid": "7", "n": "fam"}]))
    assert http.qid("QID_IM_SET_ROSTER_FRD_GID", fid=rose, gid="7")["result"] == "1"
    assert ok(http, "QID_IM_SET_ROSTER_FRD_NAME", fid=rose, name="许三多")["result"] == "1"
    friend = roster(http)[0][rose]
    assert (friend["gid"], friend["fname"]) == ("7", "许三多")

    refused(http, "QID_IM_SET_ROSTER_FRD_GID", 400, "bad_request", "gid", fid=rose, gid="8")
    refused(http, "QID_IM_SET_ROSTER_FRD_GID", 400, "bad_request", "gid", fid=rose)
    refused(http, "QID_IM_SET_ROSTER_FRD_GID", 400, "bad_request", "fid", gid="1")
    refused(http, "QID_IM_SET_ROSTER_FRD_GID", 404, "not_found", fid=tom, gid="1")
    refused(http, "QID_IM_SET_ROSTER_FRD_NAME", 400, "bad_request", "name", fid=rose,
            name="n" * 51)
    refused(http, "QID_IM_SET_ROSTER_FRD_NAME", 400, "bad_request", "fid", fid="bad uid",
            name="x")
    refused(http, "QID_IM_SET_ROSTER_FRD_NAME", 404, "not_found", fid=tom, name="Tom")
    assert roster(http)[0][rose]["gid"] == "7"


def test_roster_qids_need_a_token(server):
    assert_needs_token(server, ROSTER_QIDS)
