"""Checked tokens are trusted from memory for token_cache_s (issue 7), yet a token the server
revokes is refused at once, and an expired one at its expiry, wherever it is presented."""

import hashlib
import time

from im import protocol
from im.client import Http
from support import PASSWORD
from test_crossproc import Split
from test_security import tcp_login

QID = "/api/QID_IM_GET_DEPT_VER"


def status(base_url: str, token: str) -> int:
    return Http(base_url, token).call("POST", QID, {})[0]


def warm(base_url: str, token: str, times: int = 3) -> None:
    """Use the token a few times, so that the process(es) behind base_url cache it."""
    for _ in range(times):
        assert status(base_url, token) == 200


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def test_a_token_logged_out_on_tcp_is_refused_by_http_at_once(server, make_users, connect):
    jack, = make_users(1)
    phone = connect(jack, res="android")
    warm(server.base_url, phone.token)
    phone.request(protocol.IM_LOGOUT, {"msgid": "bye"})
    assert status(server.base_url, phone.token) == 401
    assert tcp_login(server, jack, token=phone.token) == "auth_failed"


def test_a_password_change_refuses_the_other_tokens_at_once(server, make_users, connect):
    jack, = make_users(1)
    laptop, mine = server.http().login(jack, PASSWORD), server.http().login(jack, PASSWORD)
    warm(server.base_url, laptop)
    server.http(mine).qid("QID_IM_SET_USER_PWD", old_pwd=PASSWORD, new_pwd="new secret")
    assert status(server.base_url, laptop) == 401
    assert status(server.base_url, mine) == 200  # the token that changed it is kept


def test_a_disabled_account_is_refused_at_once(server, make_users):
    jack, = make_users(1)
    token = server.http().login(jack, PASSWORD)
    warm(server.base_url, token)
    server.admin().admin("PATCH", f"/users/{jack}", {"disabled": True})
    assert status(server.base_url, token) in (401, 403)


def test_a_cached_token_is_refused_at_its_expiry(server, make_users):
    jack, = make_users(1)
    token = server.http().login(jack, PASSWORD)
    server.sql("UPDATE im_token SET expires_at = now() + interval '2 seconds' WHERE token_hash = %s",
               (digest(token),))
    warm(server.base_url, token)  # cached now, for token_cache_s (5 s) but not past the expiry
    (left,) = server.sql("SELECT extract(epoch FROM expires_at - now()) FROM im_token "
                         "WHERE token_hash = %s", (digest(token),))[0]
    time.sleep(float(left) + 0.1)
    assert status(server.base_url, token) == 401
    assert tcp_login(server, jack, token=token) == "auth_failed"


def test_a_revocation_by_sql_takes_effect_within_token_cache_s(server, make_users):
    jack, = make_users(1)
    token = server.http().login(jack, PASSWORD)
    warm(server.base_url, token)
    server.sql("UPDATE im_token SET revoked = true WHERE token_hash = %s", (digest(token),))
    started = time.monotonic()
    while status(server.base_url, token) == 200:
        assert time.monotonic() - started < 5 + 2, "still accepted after token_cache_s"
        time.sleep(0.2)


def test_with_token_cache_s_0_a_revocation_by_sql_is_immediate(make_server, make_users):
    srv = make_server(token_cache_s=0)
    jack, = make_users(1, srv=srv)
    token = srv.http().login(jack, PASSWORD)
    warm(srv.base_url, token)
    srv.sql("UPDATE im_token SET revoked = true WHERE token_hash = %s", (digest(token),))
    assert status(srv.base_url, token) == 401


def test_gunicorn_workers_refuse_a_token_logged_out_on_im_tcp(postgres, tmp_path):
    split = Split(postgres, tmp_path)
    try:
        jack, = split.users(1)
        phone = split.connect(jack, res="android")
        warm(split.web, phone.token, times=8)  # both workers have seen it
        phone.request(protocol.IM_LOGOUT, {"msgid": "bye"})
        # the revocation travels by NOTIFY: well before token_cache_s (5 s) ran out
        started = time.monotonic()
        refused = 0
        while refused < 8:
            assert time.monotonic() - started < 1.0, "a worker still accepts the token"
            refused = refused + 1 if status(split.web, phone.token) == 401 else 0
    finally:
        split.close()
