"""The admin API for users (PROTOCOL.md §4, §6.13): create, bulk, read, patch, and who may."""

import secrets

import pytest

from support import ADMIN_KEY

PW = "pw"


def fresh(prefix: str = "a") -> str:
    return f"{prefix}{secrets.token_hex(5)}"


def admin_call(server, method: str, path: str, body=None, key: str | None = ADMIN_KEY):
    return server.http().call(method, "/admin" + path, body, token=key or "")


def assert_error(result, status: int, code: str, mentions: str = "") -> None:
    got, body, headers = result
    assert (got, body.get("code")) == (status, code), body
    assert headers["Content-Type"].startswith("application/json")
    assert mentions in body["err"]


def test_create_read_and_log_in(server):
    uid = fresh()
    status, body, _ = admin_call(server, "POST", "/users",
                                 {"uid": uid, "pwd": "s3cret", "name": "Jack", "deptid": "d1",
                                  "sex": "1", "age": 30, "birthday": "1990-02-03",
                                  "email": "jack@example.com", "cellphone": "+86 138-0000"})
    assert (status, body) == (201, {"uid": uid})
    user = server.admin().admin("GET", f"/users/{uid}")
    assert user["uid"] == uid and user["name"] == "Jack" and user["deptid"] == "d1"
    assert (user["sex"], user["age"], user["birthday"]) == ("1", "30", "1990-02-03")
    assert user["email"] == "jack@example.com" and user["disabled"] is False
    assert not any("pwd" in key or "hash" in key for key in user)
    assert not any(str(v).startswith("scrypt$") for v in user.values())
    assert server.http().login(uid, "s3cret")


def test_duplicate_is_409(server):
    uid = fresh()
    assert admin_call(server, "POST", "/users", {"uid": uid, "pwd": PW})[0] == 201
    assert_error(admin_call(server, "POST", "/users", {"uid": uid, "pwd": "other"}), 409, "already_exists")
    assert server.http().login(uid, PW)  # the first password stays


@pytest.mark.parametrize("body,field", [
    ({"uid": "system", "pwd": PW}, "uid"), ({"uid": "has space", "pwd": PW}, "uid"),
    ({"uid": "x" * 51, "pwd": PW}, "uid"), ({"uid": "", "pwd": PW}, "uid"),
    ({"uid": "caf\u00e9", "pwd": PW}, "uid"), ({"uid": 12, "pwd": PW}, "uid"), ({"pwd": PW}, "uid"),
    ({"uid": "NEW", "pwd": ""}, "pwd"), ({"uid": "NEW"}, "pwd"),
    ({"uid": "NEW", "pwd": PW, "age": 151}, "age"), ({"uid": "NEW", "pwd": PW, "sex": "3"}, "sex"),
    ({"uid": "NEW", "pwd": PW, "birthday": "2001-02-30"}, "birthday"),
    ({"uid": "NEW", "pwd": PW, "email": "no-at"}, "email"),
    ({"uid": "NEW", "pwd": PW, "name": "n" * 51}, "name"),
])
def test_bad_users_are_400_naming_the_field(server, body, field):
    body = {k: (fresh() if v == "NEW" else v) for k, v in body.items()}
    assert_error(admin_call(server, "POST", "/users", body), 400, "bad_request", field)


def test_bulk_counts_created_and_existing(server):
    old, new1, new2 = fresh(), fresh(), fresh()
    admin_call(server, "POST", "/users", {"uid": old, "pwd": PW})
    status, body, _ = admin_call(server, "POST", "/users/bulk", {"users": [
        {"uid": old, "pwd": "x"}, {"uid": new1, "pwd": PW, "name": "One"}, {"uid": new2, "pwd": PW}]})
    assert (status, body) == (200, {"created": 2, "existing": 1})
    assert server.admin().admin("GET", f"/users/{new1}")["name"] == "One"
    assert server.http().login(new2, PW)


def test_bulk_of_exactly_1000_is_accepted_over_is_413(server):
    prefix = fresh("b")
    users = [{"uid": f"{prefix}_{i}", "pwd": PW} for i in range(1000)]
    status, body, _ = admin_call(server, "POST", "/users/bulk", {"users": users})
    assert (status, body) == (200, {"created": 1000, "existing": 0})
    status, body, _ = admin_call(server, "POST", "/users/bulk",
                                 {"users": users + [{"uid": fresh(), "pwd": PW}]})
    assert status == 413 and body["code"]


@pytest.mark.parametrize("body", [{}, {"users": "x"}, {"users": [1]}, {"users": [{"uid": "system", "pwd": PW}]}])
def test_bad_bulk_is_400_and_creates_nothing(server, body):
    before = server.sql("SELECT count(*) FROM im_user")
    assert_error(admin_call(server, "POST", "/users/bulk", body), 400, "bad_request")
    assert server.sql("SELECT count(*) FROM im_user") == before


def test_patch_fields(server, make_users):
    jack, = make_users(1)
    (ver_before,) = server.sql("SELECT ver FROM im_user WHERE uid = %s", (jack,))[0]
    status, _, _ = admin_call(server, "PATCH", f"/users/{jack}",
                              {"name": "Jack Dawson", "deptid": "art", "position": "painter",
                               "zipcode": "SW1A1AA", "telephone": "(01) 234"})
    assert status == 200
    user = server.admin().admin("GET", f"/users/{jack}")
    assert (user["name"], user["deptid"], user["position"]) == ("Jack Dawson", "art", "painter")
    assert (user["zipcode"], user["telephone"]) == ("SW1A1AA", "(01) 234")
    assert int(user["ver"]) > ver_before  # a directory change bumps the contacts version
    assert server.http().login(jack, PW)


@pytest.mark.parametrize("body,field", [
    ({"uid": "other"}, "uid"), ({"pwd_hash": "x"}, "pwd_hash"), ({"disabled": "yes"}, "disabled"),
    ({"age": "old"}, "age"), ({"pwd": ""}, "pwd"), ({"zipcode": "12345678901"}, "zipcode"),
])
def test_bad_patch_is_400_naming_the_field(server, make_users, body, field):
    jack, = make_users(1)
    assert_error(admin_call(server, "PATCH", f"/users/{jack}", body), 400, "bad_request", field)
    assert server.http().login(jack, PW)


def test_unknown_user_is_404(server):
    ghost = fresh("ghost")
    assert_error(admin_call(server, "GET", f"/users/{ghost}"), 404, "not_found")
    assert_error(admin_call(server, "PATCH", f"/users/{ghost}", {"name": "x"}), 404, "not_found")
    assert_error(admin_call(server, "PATCH", f"/users/{ghost}", {"pwd": "x"}), 404, "not_found")
    assert_error(admin_call(server, "GET", "/users/bad%20uid"), 400, "bad_request")


@pytest.mark.parametrize("key", [None, "wrong-key", ADMIN_KEY + "x", "ünïcode"])
def test_missing_or_wrong_key_is_401(server, key):
    for method, path, body in (("POST", "/users", {"uid": fresh(), "pwd": PW}), ("GET", "/users/x", None),
                               ("POST", "/users/bulk", {"users": []}), ("PATCH", "/users/x", {})):
        result = server.http().call(method, "/admin" + path, body,
                                    headers={"Authorization": f"Bearer {key}"} if key else {})
        assert_error(result, 401, "not_authenticated")


def test_user_token_is_not_an_admin_key(server, make_users):
    jack, = make_users(1)
    token = server.http().login(jack, PW)
    assert_error(admin_call(server, "GET", f"/users/{jack}", key=token), 401, "not_authenticated")


def test_admin_api_is_hidden_without_a_key(make_server):
    srv = make_server(admin_key="")
    for key in (None, "", ADMIN_KEY):
        assert_error(admin_call(srv, "POST", "/users", {"uid": fresh(), "pwd": PW}, key=key), 404, "not_found")
    assert srv.sql("SELECT count(*) FROM im_user") == [(0,)]


def test_admin_api_is_hidden_from_other_addresses(make_server):
    srv = make_server(admin_allow="10.9.9.9")
    assert_error(admin_call(srv, "POST", "/users", {"uid": fresh(), "pwd": PW}), 404, "not_found")
    assert_error(admin_call(srv, "GET", "/users/x"), 404, "not_found")


@pytest.mark.parametrize("addr,allowed,ok", [
    ("127.0.0.1", ["127.0.0.1", "::1"], True), ("::1", ["127.0.0.1", "::1"], True),
    ("::ffff:127.0.0.1", ["127.0.0.1"], True), ("10.1.2.3", ["10.0.0.0/8"], True),
    ("10.1.2.3", ["127.0.0.1"], False), ("11.0.0.1", ["10.0.0.0/8"], False), ("", ["127.0.0.1"], False),
    ("fe80::1", ["fe80::/10"], True), ("junk", ["0.0.0.0/0"], False),
])
def test_admin_allow_takes_addresses_and_networks(addr, allowed, ok):
    from im.web.admin import address_allowed
    assert address_allowed(addr, allowed) is ok
