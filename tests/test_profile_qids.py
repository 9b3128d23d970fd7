"""Personal profile and password over HTTP (PROTOCOL.md §2.1, §2.2, §6.5, §6.6)."""

import pytest

from im import protocol
from support import PASSWORD
from test_roster_qids import api, assert_needs_token, befriend, contacts_ver, ok, refused

PUBLIC = ["uname", "name", "deptid", "position", "telephone", "cellphone", "email", "avatar",
          "sign"]
PRIVATE = ["sex", "age", "birthday", "address", "zipcode"]
JACK = {"sex": "1", "age": "30", "birthday": "1990-02-03", "telephone": "+86 (512) 8888-888",
        "cellphone": "13912345678", "email": "jack@rooten.com.cn", "address": "创意产业园",
        "zipcode": "215123", "position": "软件工程师"}


def info(http, uname: str) -> dict:
    result = http.qid("QID_IM_GET_USER_INFO", uname=uname)
    assert result["type"] == "list"
    return {c["n"]: c["v"] for c in result["result"]}


def test_strangers_see_the_directory_fields_friends_and_jack_see_everything(server, make_users):
    jack, rose, tom = make_users(3)
    befriend(server, jack, rose)
    jack_api = api(server, jack)
    assert ok(jack_api, "QID_IM_SET_USER_INFO", uname=jack, **JACK)["result"] == "1"
    jack_api.qid("QID_IM_SET_ROSTER_SIGN", sign="hi")

    mine = info(jack_api, jack)
    assert list(mine) == PUBLIC + PRIVATE
    assert mine == {**JACK, "uname": jack, "name": "", "deptid": "", "avatar": "", "sign": "hi"}
    assert info(api(server, rose), jack) == mine
    seen_by_tom = info(api(server, tom), jack)
    assert seen_by_tom == {k: mine[k] for k in PUBLIC}


def test_unknown_or_malformed_uname(server, make_users):
    jack, = make_users(1)
    http = api(server, jack)
    refused(http, "QID_IM_GET_USER_INFO", 404, "no_such_user", uname=jack + "_nobody")
    refused(http, "QID_IM_GET_USER_INFO", 400, "bad_request", "uname", uname="bad uid")
    refused(http, "QID_IM_GET_USER_INFO", 400, "bad_request", "uname")


def test_nobody_writes_someone_elses_profile(server, make_users):
    jack, rose = make_users(2)
    http = api(server, rose)
    refused(http, "QID_IM_SET_USER_INFO", 403, "forbidden", uname=jack, sex="2")
    refused(http, "QID_IM_SET_USER_INFO", 400, "bad_request", "uname", sex="2")
    assert info(http, jack)["position"] == ""
    assert server.sql("SELECT sex FROM im_user WHERE uid = %s", (jack,)) == [("",)]


@pytest.mark.parametrize("field,value", [
    ("sex", "3"), ("age", "151"), ("age", "-1"), ("birthday", "2020-02-30"),
    ("birthday", "03/02/1990"), ("telephone", "call me"), ("cellphone", "1" * 31),
    ("email", "a@@b"), ("email", "no-at"), ("zipcode", "12345678901"), ("address", "a" * 201),
    ("position", "p" * 101), ("sex", ["1"]),
])
def test_an_invalid_profile_field_is_named_and_nothing_changes(server, make_users, field, value):
    jack, = make_users(1)
    http = api(server, jack)
    other = "address" if field == "position" else "position"
    refused(http, "QID_IM_SET_USER_INFO", 400, "bad_request", field, uname=jack,
            **{other: "changed", field: value})
    assert info(http, jack)[other] == ""


def test_directory_fields_bump_the_contacts_version_private_ones_do_not(server, make_users):
    jack, = make_users(1)
    http = api(server, jack)
    before, _ = contacts_ver(server, jack)
    http.qid("QID_IM_SET_USER_INFO", uname=jack, address="elsewhere", age="31")
    assert contacts_ver(server, jack)[0] == before
    http.qid("QID_IM_SET_USER_INFO", uname=jack, cellphone="123")
    stamp, current = contacts_ver(server, jack)
    assert before < stamp <= current


def test_password_change_kicks_other_sessions_and_keeps_the_callers(server, make_users, connect):
    jack, = make_users(1)
    phone = connect(jack, res="android")
    laptop, tablet = api(server, jack), api(server, jack)

    refused(laptop, "QID_IM_SET_USER_PWD", 403, "auth_failed", "old_pwd", old_pwd="wrong",
            new_pwd="s3cret")
    refused(laptop, "QID_IM_SET_USER_PWD", 400, "bad_request", "new_pwd", old_pwd=PASSWORD)
    refused(laptop, "QID_IM_SET_USER_PWD", 400, "bad_request", "new_pwd", old_pwd=PASSWORD,
            new_pwd="")
    refused(laptop, "QID_IM_SET_USER_PWD", 400, "bad_request", "old_pwd", new_pwd="s3cret")
    phone.assert_silent(0.2)

    assert laptop.qid("QID_IM_SET_USER_PWD", old_pwd=PASSWORD, new_pwd="s3cret")["result"] == "1"
    # jack@android is kicked with the reason and disconnected
    _, kick = phone.wait(protocol.IM_NOTIFY_KICK, timeout=5)
    assert kick == {"reason": "password_changed"}
    phone.wait_closed(timeout=5)
    # the tablet's token is revoked, the laptop's still works
    refused(tablet, "QID_IM_GET_ROSTER_ALL", 401, "not_authenticated")
    assert laptop.qid("QID_IM_GET_USER_INFO", uname=jack)["type"] == "list"
    # only the new password logs in
    status, body, _ = server.http().call("POST", "/api/login", {"uid": jack, "pwd": PASSWORD})
    assert (status, body["code"]) == (401, "auth_failed")
    assert server.http().login(jack, "s3cret")


def test_profile_qids_need_a_token(server):
    assert_needs_token(server, ("QID_IM_GET_USER_INFO", "QID_IM_SET_USER_INFO",
                                "QID_IM_SET_USER_PWD"))
