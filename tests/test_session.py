"""Sessions over TCP (PROTOCOL.md §1.1, §1.5, §6.4, §6.8, §6.16, §6.17): logging in and out,
the timeouts, bad frames, kicks, and the limits on failed logins."""

import struct
import time

import pytest

from im import protocol
from im.client import ConnectionClosed, RequestFailed

PW = "pw"
ACK = protocol.IM_MESSAGE_ACK


def raw(msgtype: int, data: bytes) -> bytes:
    return struct.pack(">II", len(data), msgtype) + data


def login_fails(client, uid: str, pwd: str | None = None, token: str | None = None, res: str = "pc") -> str:
    """Try to log in, expecting failure; returns the error code."""
    with pytest.raises(RequestFailed) as failed:
        client.login(uid, pwd, token=token, res=res)
    return failed.value.code


def error_ack(client, msgtype: int) -> dict:
    _, ack = client.wait(ACK, type=str(msgtype))
    assert "code" in ack, ack
    return ack


def kicked_with(client) -> str:
    """The reason of the IM_NOTIFY_KICK a client receives before being closed."""
    frames = client.wait_closed(timeout=5)
    kicks = [body for mt, body in frames if mt == protocol.IM_NOTIFY_KICK]
    assert len(kicks) == 1, frames
    return kicks[0]["reason"]


def patch_user(server, uid: str, **fields) -> None:
    server.admin().admin("PATCH", f"/users/{uid}", fields)


# --- logging in --------------------------------------------------------------------------

def test_login_by_password_then_by_token(server, make_users):
    jack, = make_users(1)
    phone = server.client()
    ack = phone.login(jack, PW, res="android")
    assert ack["type"] == str(protocol.IM_LOGIN) and ack["time"] and len(ack["token"]) >= 40
    pc = server.client()
    again = pc.login(jack, token=ack["token"], res="pc")
    assert again["token"] == ack["token"]
    assert phone.heartbeat() and pc.heartbeat()
    third = server.client()
    third.login("", token=ack["token"], res="pad")  # the token names its user
    assert third.heartbeat()


def test_wrong_password_unknown_user_and_disabled_user(server, make_users):
    jack, rose = make_users(2)
    client = server.client()
    assert login_fails(client, jack, "not-pw") == "auth_failed"
    assert login_fails(client, "nobody-" + jack, PW) == "auth_failed"
    patch_user(server, rose, disabled=True)
    other = server.client()
    assert login_fails(other, rose, PW) == "forbidden"


def test_token_of_another_user_or_garbage_is_refused(server, make_users, connect):
    jack, rose = make_users(2)
    token = connect(jack).token
    client = server.client()
    assert login_fails(client, rose, token=token) == "auth_failed"
    assert login_fails(client, jack, token="x" * 43) == "auth_failed"
    other = server.client()
    other.send(protocol.IM_LOGIN, {"msgid": "1", "uid": jack, "token": 12345, "res": "pc"})
    assert error_ack(other, protocol.IM_LOGIN)["code"] == "auth_failed"


def test_three_failures_close_the_connection(server, make_users):
    jack, = make_users(1)
    client = server.client()
    assert login_fails(client, jack, "bad1") == "auth_failed"
    assert login_fails(client, jack, "bad2") == "auth_failed"
    client.send(protocol.IM_LOGIN, {"msgid": "3", "uid": jack, "pwd": "bad3", "res": "pc"})
    frames = client.wait_closed(timeout=5)
    assert [(mt, b["code"], b["msgid"]) for mt, b in frames] == [(ACK, "auth_failed", "3")]


def test_second_login_on_one_connection_is_refused(server, make_users, connect):
    jack, = make_users(1)
    client = connect(jack)
    with pytest.raises(RequestFailed) as failed:
        client.login(jack, PW, res="other")
    assert failed.value.code == "bad_request"
    assert client.heartbeat()


def test_login_timeout_closes_a_silent_connection(make_server):
    srv = make_server(login_timeout_s=0.5)
    started = time.monotonic()
    client = srv.client()
    client.heartbeat()  # allowed before login, but does not postpone the deadline
    assert client.wait_closed(timeout=5) == []
    assert time.monotonic() - started < 4


def test_heartbeat_before_and_after_login(server, make_users):
    jack, = make_users(1)
    client = server.client()
    assert client.heartbeat()["time"]
    client.login(jack, PW)
    beat = client.heartbeat()
    assert len(beat["time"]) == 19 and list(beat) == ["time"]


def test_idle_timeout_closes_only_silent_connections(make_server, make_users):
    srv = make_server(idle_timeout_s=2)
    jack, rose = make_users(2, srv=srv)
    silent, busy = srv.client(), srv.client()
    silent.login(jack, PW)
    busy.login(rose, PW)
    started = time.monotonic()
    while time.monotonic() - started < 3.2:
        busy.heartbeat()
        time.sleep(0.3)
    assert silent.wait_closed(timeout=3) == []
    assert busy.heartbeat()


# --- kicks -------------------------------------------------------------------------------

def test_conflict_kicks_the_older_connection_of_the_same_resource(server, make_users, connect):
    jack, = make_users(1)
    old_pc = connect(jack, res="pc")
    phone = connect(jack, res="android")
    new_pc = connect(jack, res="pc")
    assert kicked_with(old_pc) == "conflict"
    assert new_pc.heartbeat()
    phone.assert_silent()
    assert phone.heartbeat()


def test_password_change_kicks_and_revokes_tokens(server, make_users, connect):
    jack, = make_users(1)
    pc = connect(jack)
    token = pc.token
    patch_user(server, jack, pwd="new-secret")
    assert kicked_with(pc) == "password_changed"
    assert server.http(token).call("POST", "/api/QID_IM_GET_GROUP_LIST", {})[0] == 401
    client = server.client()
    assert login_fails(client, jack, token=token) == "auth_failed"
    assert login_fails(client, jack, PW) == "auth_failed"
    assert server.client().login(jack, "new-secret")["token"]


def test_disabling_kicks_and_forbids(server, make_users, connect):
    jack, = make_users(1)
    pc, phone = connect(jack, res="pc"), connect(jack, res="phone")
    patch_user(server, jack, disabled=True)
    assert kicked_with(pc) == "disabled"
    assert kicked_with(phone) == "disabled"
    assert login_fails(server.client(), jack, token=pc.token) == "auth_failed"
    assert login_fails(server.client(), jack, PW) == "forbidden"
    patch_user(server, jack, disabled=False)
    assert server.client().login(jack, PW)


# --- bad frames ----------------------------------------------------------------------------

def test_oversize_frame_is_answered_then_the_connection_closed(server, make_users, connect):
    jack, = make_users(1)
    client = connect(jack)
    client.send_bytes(struct.pack(">II", 65537, protocol.IM_MESSAGE) + b"x" * 1000)
    frames = client.wait_closed(timeout=5)
    assert frames == [(ACK, {"type": str(protocol.IM_MESSAGE), "msgid": "", "code": "frame_too_large",
                             "err": frames[0][1]["err"]})]


def test_largest_allowed_frame_is_accepted(server, make_users, connect):
    jack, = make_users(1)
    client = connect(jack)
    body = b'{"pad": "' + b"x" * (65536 - 11) + b'"}'
    assert len(body) == 65536
    client.send_bytes(raw(protocol.IM_HEARTBEAT, body))
    assert client.wait(protocol.IM_HEARTBEAT)[1]["time"]


@pytest.mark.parametrize("data", [b"{oops", b"[1]", b"7", b'"s"', b"null", b'{"a": "\xff"}'])
def test_bad_body_gets_bad_request_and_the_connection_stays(server, make_users, connect, data):
    jack, = make_users(1)
    client = connect(jack)
    client.send_bytes(raw(protocol.IM_MESSAGE, data))
    ack = error_ack(client, protocol.IM_MESSAGE)
    assert (ack["code"], ack["msgid"]) == ("bad_request", "")
    assert client.heartbeat()


def test_twenty_bad_frames_in_a_row_close_nineteen_do_not(server, make_users, connect):
    jack, = make_users(1)
    client = connect(jack)
    client.send_bytes(raw(protocol.IM_MESSAGE, b"{") * 19)
    assert client.heartbeat()  # a good frame resets the count
    assert len([f for f in client.drain() if f[0] == ACK]) == 19
    client.send_bytes(raw(protocol.IM_MESSAGE, b"{") * 20 + protocol.encode(protocol.IM_HEARTBEAT, {}))
    frames = client.wait_closed(timeout=5)
    assert [b["code"] for _, b in frames] == ["bad_request"] * 20


def test_before_login_only_login_and_heartbeat(server, make_users):
    jack, = make_users(1)
    client = server.client()
    for msgtype in (protocol.IM_MESSAGE, protocol.IM_LOGOUT, protocol.IM_PRESENCE):
        client.send(msgtype, {"msgid": f"m{msgtype}"})
        ack = error_ack(client, msgtype)
        assert (ack["code"], ack["msgid"]) == ("not_authenticated", f"m{msgtype}")
    client.send(0x7777, {})
    assert error_ack(client, 0x7777)["code"] == "unknown_type"
    client.login(jack, PW)
    assert client.heartbeat()


def test_twenty_unauthenticated_frames_close(server):
    client = server.client()
    client.send_bytes(protocol.encode(protocol.IM_MESSAGE, {"msgid": "x"}) * 20)
    frames = client.wait_closed(timeout=5)
    assert [b["code"] for _, b in frames] == ["not_authenticated"] * 20


@pytest.mark.parametrize("msgid", ["", "x" * 51, 17, None, ["a"], {"a": 1}])
def test_unusable_msgid_is_bad_request_answered_with_empty_msgid(server, make_users, msgid):
    jack, = make_users(1)
    client = server.client()
    client.send(protocol.IM_LOGIN, {"msgid": msgid, "uid": jack, "pwd": PW, "res": "pc"})
    ack = error_ack(client, protocol.IM_LOGIN)
    assert (ack["code"], ack["msgid"]) == ("bad_request", "")
    client.login(jack, PW)
    client.send(0x7777, {"msgid": "y" * 51})
    assert error_ack(client, 0x7777) == {"type": str(0x7777), "msgid": "", "code": "unknown_type",
                                         "err": "unknown msgtype 30583"}


def test_msgid_of_fifty_characters_is_echoed(server, make_users):
    jack, = make_users(1)
    client = server.client()
    ack = client.request(protocol.IM_LOGIN, {"msgid": "é" * 50, "uid": jack, "pwd": PW, "res": "pc"})
    assert ack["msgid"] == "é" * 50 and ack["token"]


# --- logout ----------------------------------------------------------------------------------

def test_logout_revokes_the_token_but_other_sessions_stay(server, make_users, connect):
    jack, = make_users(1)
    pc = connect(jack, res="pc")
    token = pc.token
    phone = server.client()
    phone.login(jack, token=token, res="phone")
    other_token = connect(jack, res="pad").token
    assert pc.request(protocol.IM_LOGOUT, {"msgid": "bye"})["msgid"] == "bye"
    assert pc.wait_closed(timeout=5) == []
    assert phone.heartbeat()  # logged in with that token before: stays until it closes
    assert login_fails(server.client(), jack, token=token) == "auth_failed"
    assert server.http(token).call("POST", "/api/QID_IM_GET_GROUP_LIST", {})[0] == 401
    assert server.http(other_token).call("POST", "/api/QID_IM_GET_GROUP_LIST", {})[0] == 200


# --- failed-login limits ---------------------------------------------------------------------

def test_failed_login_limits_per_uid_and_address(make_server, make_users):
    srv = make_server(login_failures_per_uid_addr=3, login_failures_per_addr=5)
    jack, rose, tom = make_users(3, srv=srv)
    jack_token = srv.client().login(jack, PW)["token"]
    tom_token = srv.client().login(tom, PW)["token"]

    client = srv.client()
    assert login_fails(client, jack, "bad") == "auth_failed"
    assert login_fails(client, jack, "bad") == "auth_failed"
    assert srv.http().call("POST", "/api/login", {"uid": jack, "pwd": "bad"})[0] == 401
    # three failures for jack from this address: even the right password is refused now
    assert login_fails(srv.client(), jack, PW) == "rate_limited"
    status, body, _ = srv.http().call("POST", "/api/login", {"uid": jack, "pwd": PW})
    assert (status, body["code"]) == (429, "rate_limited")
    assert srv.client().login(jack, token=jack_token)  # tokens are never limited

    assert login_fails(srv.client(), rose, "bad") == "auth_failed"  # 4 from this address
    assert srv.client().login(rose, PW)  # a success does not reset the counters
    assert login_fails(srv.client(), "nobody-" + rose, "bad") == "auth_failed"  # 5
    for uid in (rose, tom):
        assert login_fails(srv.client(), uid, PW) == "rate_limited"
    assert srv.client().login(tom, token=tom_token)
    assert login_fails(srv.client(), tom, token="forged-" + tom_token) == "auth_failed"
    assert srv.http("forged").call("POST", "/api/QID_IM_GET_GROUP_LIST", {})[0] == 401
    rows = srv.sql("SELECT count(*) FROM im_login_failure")
    assert rows == [(5,)]  # neither refusals nor bad tokens count as failed password logins


def test_connection_closes_after_three_refusals_of_any_kind(make_server, make_users):
    srv = make_server(login_failures_per_uid_addr=1)
    jack, = make_users(1, srv=srv)
    client = srv.client()
    assert login_fails(client, jack, "bad") == "auth_failed"
    assert login_fails(client, jack, PW) == "rate_limited"
    client.send(protocol.IM_LOGIN, {"msgid": "3", "uid": jack, "pwd": PW, "res": "pc"})
    assert [b["code"] for _, b in client.wait_closed(timeout=5)] == ["rate_limited"]
    with pytest.raises(ConnectionClosed):
        client.heartbeat()


# --- order and capacity ----------------------------------------------------------------------

def test_frames_are_handled_in_the_order_they_arrive(server, make_users):
    jack, = make_users(1)
    client = server.client()
    client.send_bytes(b"".join([
        protocol.encode(protocol.IM_LOGIN, {"msgid": "1", "uid": jack, "pwd": PW, "res": "pc"}),
        protocol.encode(protocol.IM_HEARTBEAT, {}),
        protocol.encode(0x7777, {"msgid": "2"}),
        raw(protocol.IM_PRESENCE, b"{"),
        protocol.encode(protocol.IM_LOGOUT, {"msgid": "3"}),
    ]))
    frames = client.wait_closed(timeout=5)
    assert [(mt, b.get("msgid"), b.get("code")) for mt, b in frames] == [
        (ACK, "1", None), (protocol.IM_HEARTBEAT, None, None), (ACK, "2", "unknown_type"),
        (ACK, "", "bad_request"), (ACK, "3", None)]


def test_max_connections_holds_newcomers_until_a_slot_frees(make_server):
    srv = make_server(max_connections=2)
    first, second = srv.client(), srv.client()
    assert first.heartbeat() and second.heartbeat()
    third = srv.client()  # the kernel accepts it; the server does not serve it yet
    third.send(protocol.IM_HEARTBEAT, {})
    third.assert_silent(0.5)
    first.close()
    assert third.wait(protocol.IM_HEARTBEAT)[1]["time"]
    assert second.heartbeat()
