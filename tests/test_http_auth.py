"""HTTP login and token checks (PROTOCOL.md §2.1, §1.5): JSON errors everywhere, never HTML."""

import json
import urllib.request

import pytest

PW = "pw"
QID = "/api/QID_IM_GET_GROUP_LIST"


def post(server, path: str, body=None, token: str = "", raw: bytes | None = None, headers=None):
    return server.http().call("POST", path, body, token=token, raw=raw, headers=headers)


def assert_json_error(result, status: int, code: str) -> None:
    got_status, body, headers = result
    assert got_status == status, body
    assert headers["Content-Type"].startswith("application/json"), headers
    assert body["code"] == code and body["err"], body


def test_login_gives_a_token_that_authorises_qids(server, make_users):
    jack, = make_users(1)
    status, body, _ = post(server, "/api/login", {"uid": jack, "pwd": PW})
    assert status == 200 and body["type"] == "text" and len(body["result"]) >= 40
    status, groups, _ = post(server, QID, {}, token=body["result"])
    assert status == 200 and groups["type"] == "table"


def test_login_with_form_fields(server, make_users):
    jack, = make_users(1)
    status, body, _ = post(server, "/api/login", raw=f"uid={jack}&pwd={PW}".encode(),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and body["result"]


def test_wrong_password_unknown_user_disabled_user(server, make_users):
    jack, rose = make_users(2)
    assert_json_error(post(server, "/api/login", {"uid": jack, "pwd": "nope"}), 401, "auth_failed")
    assert_json_error(post(server, "/api/login", {"uid": "ghost-" + jack, "pwd": PW}), 401, "auth_failed")
    assert_json_error(post(server, "/api/login", {"uid": "bad uid!", "pwd": PW}), 401, "auth_failed")
    assert_json_error(post(server, "/api/login", {}), 401, "auth_failed")
    server.admin().admin("PATCH", f"/users/{rose}", {"disabled": True})
    assert_json_error(post(server, "/api/login", {"uid": rose, "pwd": PW}), 403, "forbidden")


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer"}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"},
    {"Authorization": "Bearer not-a-token"}, {"Authorization": "Bearer " + "x" * 300},
])
def test_qid_without_a_valid_token_is_401(server, headers):
    assert_json_error(post(server, QID, {}, headers=headers), 401, "not_authenticated")


def test_token_parameter_is_not_a_bearer(server, make_users):
    jack, = make_users(1)
    token = server.http().login(jack, PW)
    assert_json_error(post(server, QID, {"token": token}), 401, "not_authenticated")
    assert post(server, QID, {}, token=token)[0] == 200


def test_unknown_qid_is_404_for_a_user_401_for_a_stranger(server, make_users):
    jack, = make_users(1)
    token = server.http().login(jack, PW)
    assert_json_error(post(server, "/api/QID_NO_SUCH", {}, token=token), 404, "not_found")
    assert_json_error(post(server, "/api/QID_NO_SUCH", {}), 401, "not_authenticated")


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/nowhere", 404), ("POST", "/api", 404), ("GET", "/api/login", 405),
    ("DELETE", QID, 405), ("PUT", "/api/login", 405), ("GET", "/", 404),
])
def test_unknown_paths_and_wrong_methods_are_json(server, method, path, status):
    got_status, body, headers = server.http().call(method, path)
    assert got_status == status
    assert headers["Content-Type"].startswith("application/json")
    assert body["code"] and body["err"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"12", b'"text"', b"\xff\xfe"])
def test_bad_json_body_is_400(server, make_users, raw):
    jack, = make_users(1)
    token = server.http().login(jack, PW)
    for token_used in ("", token):
        path = "/api/login" if not token_used else QID
        result = post(server, path, raw=raw, token=token_used, headers={"Content-Type": "application/json"})
        assert_json_error(result, 400, "bad_request")


def test_expired_token_is_refused(server, make_users):
    jack, = make_users(1)
    token = server.http().login(jack, PW)
    other = server.http().login(jack, PW)
    server.sql("UPDATE im_token SET expires_at = now() - interval '1 second' "
               "WHERE uid = %s AND token_hash = sha256(%s::bytea)", (jack, token.encode()))
    assert_json_error(post(server, QID, {}, token=token), 401, "not_authenticated")
    assert post(server, QID, {}, token=other)[0] == 200


def test_tokens_expire_after_token_ttl(server, make_users):
    jack, = make_users(1)
    token = server.http().login(jack, PW)
    (ttl,) = server.sql("SELECT extract(epoch FROM expires_at - created_at) FROM im_token "
                        "WHERE token_hash = sha256(%s::bytea)", (token.encode(),))[0]
    assert abs(float(ttl) - 30 * 86400) < 5


def test_error_responses_never_show_html_or_tracebacks(server):
    req = urllib.request.Request(server.base_url + "/api/login", data=b"\x00" * 10, method="POST",
                                 headers={"Content-Type": "text/html"})
    try:
        urllib.request.urlopen(req, timeout=10)
    except urllib.error.HTTPError as err:
        body = err.read()
        assert err.headers["Content-Type"].startswith("application/json")
        assert json.loads(body)["code"] in ("bad_request", "auth_failed")
        assert b"<html" not in body.lower() and b"Traceback" not in body


def test_oversize_parameters_are_413_without_reading_them(server):
    huge = b'{"uid": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    result = post(server, "/api/login", raw=huge, headers={"Content-Type": "application/json"})
    assert_json_error(result, 413, "too_large")
