"""Security properties (PROTOCOL.md §1.5, §2.1, §3, §4, §6.16, §6.17): brute force is limited
without locking the real user out, failed logins do not reveal whether a user exists, tokens are
stored hashed and die when they should, hostile text is stored as text, and the file server
cannot be led outside its directory or into another user's file.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import statistics
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from im import protocol
from im.client import RequestFailed, rows
from support import PASSWORD

STRANGER, OWNER_ADDR = "127.0.0.1", "127.0.0.2"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def tcp_login(srv, uid: str, pwd: str | None = None, token: str | None = None,
              source: str = STRANGER) -> str:
    """"ok" or the error code of one login on a new connection from `source`."""
    client = srv.client(source_address=(source, 0))
    try:
        client.login(uid, pwd, token=token)
        return "ok"
    except RequestFailed as err:
        return err.code
    finally:
        client.close()


def http_login(srv, uid: str, pwd: str, source: str = STRANGER) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10, source_address=(source, 0))
    try:
        conn.request("POST", "/api/login", json.dumps({"uid": uid, "pwd": pwd}),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


# --- brute force --------------------------------------------------------------------------

def test_a_stranger_guessing_jacks_password_does_not_lock_jack_out(make_server, make_users):
    srv = make_server(login_failures_per_uid_addr=3, login_failures_per_addr=100)
    jack, = make_users(1, srv=srv)
    token = srv.client().login(jack, PASSWORD)["token"]
    # the stranger at 127.0.0.1 guesses over TCP and HTTP alike
    assert tcp_login(srv, jack, "guess1") == "auth_failed"
    assert http_login(srv, jack, "guess2")[0] == 401
    assert tcp_login(srv, jack, "guess3") == "auth_failed"
    # from there even the right password is refused now, on both transports
    assert tcp_login(srv, jack, PASSWORD) == "rate_limited"
    status, body = http_login(srv, jack, PASSWORD)
    assert (status, body["code"]) == (429, "rate_limited")
    # jack, from his own address, and by token from anywhere, still gets in
    assert tcp_login(srv, jack, PASSWORD, source=OWNER_ADDR) == "ok"
    assert http_login(srv, jack, PASSWORD, source=OWNER_ADDR)[0] == 200
    assert tcp_login(srv, jack, token=token, source=STRANGER) == "ok"


def test_a_stranger_spraying_many_users_is_limited_per_address(make_server, make_users):
    srv = make_server(login_failures_per_uid_addr=100, login_failures_per_addr=6)
    jack, rose = make_users(2, srv=srv)
    for i in range(6):  # one guess each for six users, some of whom do not exist
        assert tcp_login(srv, f"nobody{i}" if i % 2 else jack, "guess") == "auth_failed"
    # rose was never attacked, but this address is spent: rose's password is refused here...
    assert tcp_login(srv, rose, PASSWORD) == "rate_limited"
    assert http_login(srv, rose, PASSWORD)[0] == 429
    # ...and accepted from another address
    assert tcp_login(srv, rose, PASSWORD, source=OWNER_ADDR) == "ok"
    assert http_login(srv, jack, PASSWORD, source=OWNER_ADDR)[0] == 200
    assert srv.sql("SELECT count(*) FROM im_login_failure WHERE addr = %s", (STRANGER,)) == [(6,)]


def test_unknown_user_and_wrong_password_take_the_same_time(make_server, make_users):
    """Both run the KDF (real cost here), so timing does not tell whether a user exists."""
    srv = make_server(kdf_cost=14, login_failures_per_uid_addr=0, login_failures_per_addr=0)
    jack, = make_users(1, srv=srv)
    http = srv.http()
    timings: dict[str, list[float]] = {"unknown": [], "wrong": []}
    for i in range(12):
        for kind, uid in (("unknown", f"nobody-{uuid.uuid4().hex[:8]}"), ("wrong", jack)):
            started = time.perf_counter()
            status, body, _ = http.call("POST", "/api/login", {"uid": uid, "pwd": f"guess{i}"}, token="")
            timings[kind].append(time.perf_counter() - started)
            assert (status, body["code"], body["err"]) == (401, "auth_failed", "wrong user id or password")
    unknown, wrong = (statistics.median(timings[k]) for k in ("unknown", "wrong"))
    assert 0.5 < unknown / wrong < 2.0, timings
    # the KDF really ran: a malformed uid (refused before any lookup) is much faster
    started = time.perf_counter()
    for _ in range(5):
        http.call("POST", "/api/login", {"uid": "bad uid!", "pwd": "x"}, token="")
    assert (time.perf_counter() - started) / 5 < wrong, "the KDF is too cheap to be measured"


# --- tokens -------------------------------------------------------------------------------

def test_tokens_are_stored_hashed_and_never_logged(server, make_users, connect):
    jack, = make_users(1)
    tokens = [connect(jack).token, server.http().login(jack, PASSWORD)]
    stored = [bytes(r[0]) for r in server.sql(
        "SELECT token_hash FROM im_token WHERE uid = %s", (jack,))]
    for token in tokens:
        assert hashlib.sha256(token.encode()).digest() in stored
        assert not any(token.encode() in h for h in stored)
        assert token not in server.log_tail(5000)
    columns = {r[0] for r in server.sql(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'im_token'")}
    assert columns == {"token_hash", "uid", "created_at", "expires_at", "revoked"}


def token_works(srv, uid: str, token: str) -> tuple[str, int]:
    """(TCP login by token: "ok" or its code, HTTP status of a QID with it)."""
    return (tcp_login(srv, uid, token=token),
            srv.http(token).call("POST", "/api/QID_IM_GET_GROUP_LIST", {})[0])


def test_an_expired_token_fails_on_tcp_and_http(server, make_users):
    jack, = make_users(1)
    token = server.http().login(jack, PASSWORD)
    digest = hashlib.sha256(token.encode()).digest()
    server.sql("UPDATE im_token SET expires_at = now() + interval '1.5 seconds' WHERE token_hash = %s",
               (digest,))
    assert token_works(server, jack, token) == ("ok", 200)  # checked, hence cached (token_cache_s)
    (left,) = server.sql("SELECT extract(epoch FROM expires_at - now()) FROM im_token WHERE token_hash = %s",
                         (digest,))[0]
    time.sleep(max(0.0, float(left)) + 0.1)
    assert token_works(server, jack, token) == ("auth_failed", 401)  # at its expiry, cached or not


def test_a_password_change_revokes_every_other_token_on_tcp_and_http(server, make_users, connect):
    jack, = make_users(1)
    phone = connect(jack, res="phone")
    other = server.http().login(jack, PASSWORD)
    mine = server.http().login(jack, PASSWORD)
    server.http(mine).qid("QID_IM_SET_USER_PWD", old_pwd=PASSWORD, new_pwd="new secret")
    assert phone.wait(protocol.IM_NOTIFY_KICK)[1] == {"reason": "password_changed"}
    for revoked in (phone.token, other):
        assert token_works(server, jack, revoked) == ("auth_failed", 401)
    assert token_works(server, jack, mine) == ("ok", 200)
    # the administrator resets it: now every token is dead
    server.admin().admin("PATCH", f"/users/{jack}", {"pwd": PASSWORD})
    assert token_works(server, jack, mine) == ("auth_failed", 401)


def test_disabling_a_user_kills_their_tokens_on_tcp_and_http(server, make_users, connect):
    jack, = make_users(1)
    pc = connect(jack)
    token = server.http().login(jack, PASSWORD)
    server.admin().admin("PATCH", f"/users/{jack}", {"disabled": True})
    assert pc.wait(protocol.IM_NOTIFY_KICK)[1] == {"reason": "disabled"}
    assert token_works(server, jack, token) == ("auth_failed", 401)
    assert token_works(server, jack, pc.token) == ("auth_failed", 401)
    assert tcp_login(server, jack, PASSWORD) == "forbidden"
    assert http_login(server, jack, PASSWORD)[0] == 403
    server.admin().admin("PATCH", f"/users/{jack}", {"disabled": False})
    assert token_works(server, jack, token) == ("auth_failed", 401)  # revoked for good
    assert tcp_login(server, jack, PASSWORD) == "ok"


# --- hostile text is stored as text -------------------------------------------------------

HOSTILE = "it's \"q\" \\ %s %(x)s %% '; DROP TABLE im_user; -- ' OR '1'='1 \\x00 $$ 😀中文"
SHORT = "x' OR 1=1; -- %s %(a)s \\ \"😀"  # for fields of at most 50 characters


def test_quotes_backslashes_and_placeholders_read_back_unchanged(server, make_users, connect):
    jack, rose = make_users(2)
    j, r = connect(jack), connect(rose)
    jh, rh = server.http(j.token), server.http(r.token)
    # friend request text, then friendship with remarks
    r.drain(0.1)
    j.request(protocol.IM_ROSTER_ADD_REQ, {"msgid": "req", "to": rose, "msg": HOSTILE})
    assert r.wait(protocol.IM_ROSTER_ADD_REQ)[1]["msg"] == HOSTILE
    assert [p["msg"] for p in rows(rh.qid("QID_IM_GET_PENDING_REQ"))] == [HOSTILE]
    r.request(protocol.IM_ROSTER_ADD_RESP, {"msgid": "req", "to": jack, "state": "1",
                                             "msg": json.dumps({"resp_name": SHORT})})
    assert jh.call("POST", "/api/QID_IM_SET_ROSTER_FRD_NAME", {"fid": rose, "name": SHORT})[0] == 200
    # chat, sign, avatar, profile
    j.message(rose, HOSTILE)
    assert r.wait(protocol.IM_MESSAGE)[1]["body"] == HOSTILE
    jh.qid("QID_IM_SET_ROSTER_SIGN", sign=HOSTILE)
    jh.qid("QID_IM_SET_ROSTER_AVATAR", avatar=HOSTILE)
    jh.qid("QID_IM_SET_USER_INFO", uname=jack, address=HOSTILE, position=SHORT)
    server.admin().admin("PATCH", f"/users/{jack}", {"name": SHORT})
    # a group with a hostile name, rose joins with a hostile member name, a group message
    gid = jh.qid("QID_IM_SET_GROUP", gname=HOSTILE, type="2")["result"]
    r.request(protocol.IM_CHATROOM, {"type": "5", "gid": gid, "fname": SHORT})
    j.message(gid, HOSTILE, group=True)

    assert [m["body"] for m in rows(rh.qid("QID_IM_GET_OFFLINE_MSG"))] == [HOSTILE]
    assert [m["body"] for m in rows(rh.qid("QID_IM_GET_GROUP_OFFLINE_MSG"))] == [HOSTILE]
    roster = jh.qid("QID_IM_GET_ROSTER_ALL")
    assert roster["ext"]["sign"] == HOSTILE and roster["ext"]["avatar"] == HOSTILE
    assert [f["fname"] for f in json.loads(roster["result"])] == [SHORT]
    assert [f["fname"] for f in json.loads(rh.qid("QID_IM_GET_ROSTER_ALL")["result"])] == [SHORT]
    info = {c["n"]: c["v"] for c in jh.qid("QID_IM_GET_USER_INFO", uname=jack)["result"]}
    assert (info["address"], info["position"], info["name"]) == (HOSTILE, SHORT, SHORT)
    assert [g["gname"] for g in rows(rh.qid("QID_IM_GET_GROUP_LIST"))] == [HOSTILE]
    peers = {p["uid"]: p["fname"] for p in rows(rh.qid("QID_IM_GET_GROUP_PEER_LIST", gid=gid))}
    assert peers[rose] == SHORT
    assert server.sql("SELECT count(*) FROM im_user WHERE uid IN (%s, %s)", (jack, rose)) == [(2,)]


# --- files --------------------------------------------------------------------------------

def sign(token: str, subject: str, offset: str = "") -> str:
    return hmac.new(token.encode(), f"{subject}\n{offset}".encode(), hashlib.sha256).hexdigest()


class FileUser:
    def __init__(self, srv, uid: str):
        self.srv, self.token = srv, srv.http().login(uid, PASSWORD)

    def call(self, path: str, signature: str | None = None, **params) -> tuple[int, bytes, dict]:
        params = {k.replace("_", "-"): str(v) for k, v in params.items()}
        params["signature"] = signature or sign(self.token, params.get("filename", ""),
                                                params.get("offset", ""))
        return self.srv.http(self.token).call("POST", path, raw=urllib.parse.urlencode(params).encode(),
                                              headers=FORM)

    def upload(self, name: str, data: bytes, offset: int, filesize: int) -> int:
        return self.call("/file/upload", filename=name, filesize=filesize, offset=offset,
                         bin=base64.b64encode(data).decode())[0]


@pytest.fixture
def files_server(server, make_users):
    jack, rose = make_users(2)
    return server, FileUser(server, jack), FileUser(server, rose), Path(server.workdir) / "files"


TRAVERSALS = ["../server.log", "..%2Fserver.log", "/etc/passwd", "a/../../server.log", "....//x",
              "complete/../../server.log", "..", ".", "0123456789abcdef/../x", "%2e%2e%2fx"]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_traversal_names_are_refused_everywhere(files_server, name):
    srv, jack, _, files = files_server
    before = sorted(p.name for p in Path(srv.workdir).rglob("*"))
    assert jack.upload(name, b"evil", 0, 4) == 400
    for path in ("/file/download", "/file/check", "/file/download/head"):
        assert jack.call(path, filename=name, md5="0" * 32)[0] == 400
    raw = srv.http(jack.token).call("GET", f"/file/download?filename={name}&signature="
                                           f"{sign(jack.token, urllib.parse.unquote(name))}")
    assert raw[0] in (400, 404)
    assert sorted(p.name for p in Path(srv.workdir).rglob("*")) == before


def test_symlinks_inside_files_dir_are_never_followed(files_server):
    srv, jack, _, files = files_server
    secret = Path(srv.workdir) / "secret.txt"
    secret.write_text("the server's secret")
    jack.upload(uuid.uuid4().hex + ".txt", b"x", 0, 1)  # makes the directories
    served = uuid.uuid4().hex + ".txt"
    os.symlink(secret, files / "complete" / served)
    assert jack.call("/file/download", filename=served)[0] == 404
    assert jack.call("/file/download/head", filename=served)[0] == 404
    assert jack.call("/file/check", filename=served, md5=hashlib.md5(secret.read_bytes()).hexdigest())[0] == 404
    # a planted partial file: the upload does not write through it
    planted = uuid.uuid4().hex + ".txt"
    os.symlink(secret, files / "partial" / planted)
    status, body, _ = jack.call("/file/upload", filename=planted, filesize=10, offset=0,
                                bin=base64.b64encode(b"overwrite!").decode())
    assert status != 200 and b"Traceback" not in body  # an internal error: files_dir was tampered with
    assert secret.read_text() == "the server's secret"


def test_signatures_bind_token_name_and_offset(files_server):
    srv, jack, rose, _ = files_server
    name = uuid.uuid4().hex + ".txt"
    assert jack.upload(name, b"hello", 0, 5) == 200
    other = uuid.uuid4().hex + ".txt"
    wrong = [sign(rose.token, name), sign(jack.token, other), sign(jack.token, name, "1"),
             sign(jack.token, name).upper()[:-1], ""]
    for signature in wrong:
        status, body, _ = jack.call("/file/download", signature=signature or "-", filename=name)
        assert status == 401 and isinstance(body, bytes), signature
    assert jack.call("/file/download", filename=name)[1] == b"hello"


def test_concurrent_first_uploads_to_one_name_have_one_owner(files_server):
    srv, jack, rose, files = files_server
    for _ in range(8):
        name = uuid.uuid4().hex + ".bin"
        results = {}
        data = {"jack": b"J" * 1000, "rose": b"R" * 1000}
        users = {"jack": jack, "rose": rose}

        def go(who: str, name=name, results=results, users=users, data=data) -> None:
            results[who] = users[who].upload(name, data[who], 0, 1000)

        threads = [threading.Thread(target=go, args=(who,)) for who in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(results.values()) == [200, 403], results
        winner = next(w for w, s in results.items() if s == 200)
        assert jack.call("/file/download", filename=name)[1] == data[winner]
        assert srv.sql("SELECT owner FROM im_file WHERE name = %s", (name,))[0][0].endswith(
            "_0" if winner == "jack" else "_1")


def test_concurrent_chunks_at_one_offset_store_one_of_them(files_server):
    srv, jack, _, _ = files_server
    name = uuid.uuid4().hex + ".bin"
    results = []
    chunks = [bytes([65 + i]) * 500 for i in range(4)]
    threads = [threading.Thread(target=lambda c=c: results.append(jack.upload(name, c, 0, 1000)))
               for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [200, 409, 409, 409]
    assert jack.upload(name, b"Z" * 500, 500, 1000) == 200
    body = jack.call("/file/download", filename=name)[1]
    assert body[:500] in chunks and body[500:] == b"Z" * 500
