"""Hostile input against a live server (PROTOCOL.md §1.1, §1.4, §2.1, §3): random and mutated
frames, wrong types in every field of every frame type, huge strings and numbers, deep nesting,
invalid UTF-8 and NUL bytes; the same for every QID's parameters and every file endpoint's.

After each example: the server process is alive, another client's heartbeat is answered, every
error carries a code of the contract (never `internal`), and no answer shows a stack trace.
"""

import json
import struct
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from im import protocol
from im.client import Client, ConnectionClosed
from support import ADMIN_KEY, PASSWORD, ImServer

CODES = set(protocol.ERROR_CODES) - {"internal"}  # the contract's codes; never an internal error
FRAME_TYPES = [protocol.IM_LOGIN, protocol.IM_HEARTBEAT, protocol.IM_LOGOUT, protocol.IM_MESSAGE_ACK,
               protocol.IM_MESSAGE, protocol.IM_PRESENCE, protocol.IM_ROSTER_ADD_REQ,
               protocol.IM_ROSTER_ADD_RESP, protocol.IM_ROSTER_DEL_REQ, protocol.IM_CHATROOM,
               protocol.IM_CHATROOM_INVENT]
FIELDS = ["msgid", "to", "from", "time", "type", "body", "to_res", "msg", "state", "show", "gid",
          "rid", "fname", "accept", "upto", "uid", "pwd", "res", "token", "seq"]
QIDS = ["QID_IM_GET_ROSTER_ALL", "QID_IM_SET_ROSTER_GRP", "QID_IM_SET_ROSTER_SIGN",
        "QID_IM_SET_ROSTER_AVATAR", "QID_IM_SET_USER_PWD", "QID_IM_SET_ROSTER_FRD_GID",
        "QID_IM_SET_ROSTER_FRD_NAME", "QID_IM_GET_USER_INFO", "QID_IM_SET_USER_INFO",
        "QID_IM_GET_OFFLINE_MSG", "QID_IM_RECIVE_OFFLINE_MSG", "QID_IM_GET_ROSTER_MSG_HISTORY",
        "QID_IM_GET_GROUP_OFFLINE_MSG", "QID_IM_RECIVE_GROUP_OFFLINE_MSG",
        "QID_IM_GET_GROUP_MSG_HISTORY", "QID_IM_SET_GROUP", "QID_IM_GET_GROUP_LIST",
        "QID_IM_GET_GROUP_PEER_LIST", "QID_IM_GET_DEPT_VER", "QID_IM_GET_DEPT_LIST",
        "QID_IM_GET_CONTACTS_VER", "QID_IM_GET_CONTACTS_LIST", "QID_IM_GET_PENDING_REQ"]
QID_FIELDS = ["grp", "sign", "avatar", "old_pwd", "new_pwd", "fid", "gid", "name", "uname", "sex",
              "age", "birthday", "telephone", "cellphone", "email", "address", "zipcode",
              "position", "limit", "after_seq", "seq", "time", "msgto", "days", "before_seq",
              "gname", "type", "exit", "offset", "ver"]
FILE_PATHS = ["/file/upload", "/file/download", "/file/check", "/file/download/head"]
FILE_FIELDS = ["filename", "filesize", "offset", "bin", "md5", "block-size", "uid", "signature", "token"]
TRACE_MARKS = ("Traceback", 'File "', "psycopg2")


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))

# --- strategies ---------------------------------------------------------------------------

nasty_text = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["", "\x00", "a\x00b", "'; DROP TABLE im_user; --", "%s", "%(x)s", "\\",
                     "../../etc/passwd", "\ud800", "😀" * 30, " ", "0", "-1", "1e999", "null",
                     "9" * 40, "1", "2", "online", "system"]),
    st.builds(lambda n: "x" * n, st.sampled_from([51, 101, 501, 4001, 60000])),
)
numbers = st.one_of(st.integers(-2**70, 2**70), st.sampled_from([0, -1, 2**31, 2**63 - 1, 2**63, 2**64]),
                    st.floats(allow_nan=False, allow_infinity=False))
scalars = st.one_of(st.none(), st.booleans(), numbers, nasty_text)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def bodies(fields: list[str]) -> st.SearchStrategy:
    return st.dictionaries(st.sampled_from(fields), values, max_size=7)


def frame(msgtype: int, data: bytes) -> bytes:
    return struct.pack(">II", len(data), msgtype) + data


def as_json(body) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


raw_bodies = st.one_of(
    bodies(FIELDS).map(as_json),
    st.binary(max_size=200),
    st.sampled_from([b"\xff\xfe", b'{"msgid": "\xc3\x28"}', b"[]", b"null", b"1", b'"x"', b"{",
                     deep(3000).encode(), ('{"a":' * 2000 + "1" + "}" * 2000).encode(),
                     b'{"msgid": "a\\u0000b", "to": "x"}', b'{"msgid": 1e400}']),
    st.tuples(bodies(FIELDS).map(as_json), st.integers(0, 200), st.integers(0, 255))
      .map(lambda t: t[0][:t[1]] + bytes([t[2]]) + t[0][t[1] + 1:]),  # one byte mutated
)
frames = st.tuples(st.one_of(st.sampled_from(FRAME_TYPES), st.integers(0, 2**32 - 1)), raw_bodies)

# --- the server and its users --------------------------------------------------------------


class Target:
    """A dedicated server without login limits, a fuzzing user and a watchdog user."""

    def __init__(self, postgres):
        self.server = ImServer(postgres.create_database(), login_failures_per_uid_addr=0,
                               login_failures_per_addr=0).start()
        self.fuzzer, self.watchdog, self.friend = "fuzzer", "watchdog", "friend"
        self.server.admin().admin("POST", "/users/bulk", {"users": [
            {"uid": u, "pwd": PASSWORD} for u in (self.fuzzer, self.watchdog, self.friend)]})
        self.watch = self._client(self.watchdog)
        self.client = self._client(self.fuzzer)
        self.token = self.server.http().login(self.fuzzer, PASSWORD)
        self.gid = self.server.http(self.token).qid("QID_IM_SET_GROUP", gname="fuzz")["result"]

    def _client(self, uid: str) -> Client:
        client = self.server.client()
        client.login(uid, PASSWORD, res="fuzz")
        return client

    def session(self) -> Client:
        """The fuzzing user's connection, logged in again if a frame closed it."""
        if self.client.eof:
            self.client.close()
            self.client = self._client(self.fuzzer)
        return self.client

    def http_token(self) -> str:
        """A live token of the fuzzing user (a fuzzed password change may revoke it)."""
        if self.server.http(self.token).call("POST", "/api/QID_IM_GET_DEPT_VER", {})[0] == 401:
            self.token = self.server.http().login(self.fuzzer, PASSWORD)
        self.gid = self.server.http(self.token).qid("QID_IM_SET_GROUP", gname="fuzz")["result"]
        return self.token

    def assert_alive(self) -> None:
        assert self.server.proc.poll() is None, self.server.log_tail()
        assert self.watch.heartbeat(timeout=10)["time"]


@pytest.fixture(scope="module")
def target(postgres):
    t = Target(postgres)
    yield t
    t.client.close()
    t.watch.close()
    t.server.kill()


def check_answers(answers: list[tuple[int, dict]]) -> None:
    for msgtype, body in answers:
        text = json.dumps(body)
        assert not any(mark in text for mark in TRACE_MARKS), text
        if msgtype == protocol.IM_MESSAGE_ACK and "code" in body:
            assert body["code"] in CODES, body


def exchange(client: Client, data: bytes) -> list[tuple[int, dict]]:
    """Send raw bytes, then a heartbeat; everything answered before the heartbeat's echo
    (the server handles a connection's frames in order). Empty if the server closed."""
    answers = []
    try:
        client.send_bytes(data + frame(protocol.IM_HEARTBEAT, b"{}"))
        while True:
            msgtype, body = client.recv(timeout=10)
            if msgtype == protocol.IM_HEARTBEAT:
                return answers
            answers.append((msgtype, body))
    except (ConnectionClosed, OSError):
        client.eof = True
        return answers


# --- TCP ----------------------------------------------------------------------------------

@fuzz(150)
@given(frames)
def test_random_and_mutated_frames_after_login(target, msgtype_and_body):
    msgtype, data = msgtype_and_body
    check_answers(exchange(target.session(), frame(msgtype, data)))
    target.assert_alive()


@fuzz(120)
@given(st.sampled_from(FRAME_TYPES), bodies(FIELDS))
def test_wrong_types_in_every_field_before_login(target, msgtype, body):
    client = target.server.client()
    try:
        check_answers(exchange(client, frame(msgtype, as_json(body))))
    finally:
        client.close()
    target.assert_alive()


@pytest.mark.parametrize("msgtype", FRAME_TYPES)
@pytest.mark.parametrize("field", FIELDS)
def test_every_field_of_every_frame_with_every_wrong_type(target, msgtype, field):
    """Not random: each field of each frame type gets each kind of wrong value once."""
    client = target.session()
    wrong = [None, True, -1, 2**64, 1.5, "", "\x00", "x" * 5000, [], {}, [[[]]], {"a": {}}]
    data = b"".join(frame(msgtype, as_json({"msgid": "m", "to": target.friend, "type": "0",
                                              field: value}))
                    for value in wrong)
    check_answers(exchange(client, data))
    target.assert_alive()


def test_oversize_frame_and_stream_of_garbage(target):
    client = target.server.client()
    try:
        answers = exchange(client, struct.pack(">II", 2**32 - 1, protocol.IM_MESSAGE) + b"x" * 100)
        assert [b["code"] for _, b in answers] == ["frame_too_large"]
        assert client.eof
    finally:
        client.close()
    garbage = target.server.client()
    try:
        garbage.send_bytes(bytes(range(256)) * 64)
        check_answers(garbage.wait_closed(timeout=10))
    except OSError:
        pass
    finally:
        garbage.close()
    target.assert_alive()


# --- HTTP ---------------------------------------------------------------------------------

def assert_json_answer(status: int, body, what: str) -> None:
    assert status != 500 and status < 503, (what, status, body)
    assert isinstance(body, dict), (what, status, body)
    assert not any(mark in json.dumps(body) for mark in TRACE_MARKS), body
    if status >= 400:
        assert body["type"] == "error" and body["code"] in CODES and isinstance(body["err"], str), body


@fuzz(200)
@given(st.sampled_from(QIDS), bodies(QID_FIELDS))
def test_qid_parameters(target, name, params):
    http = target.server.http(target.http_token())
    status, body, _ = http.call("POST", f"/api/{name}", raw=as_json(params),
                                headers={"Content-Type": "application/json"})
    assert_json_answer(status, body, name)


def valid_params(target: Target) -> dict[str, dict]:
    """For each QID, parameters that pass validation (so that each field is reached)."""
    me, gid = target.fuzzer, target.gid
    grp = '[{"gid":"1","n":"friends","w":0,"def":true}]'
    return {
        "QID_IM_SET_ROSTER_GRP": {"grp": grp}, "QID_IM_SET_ROSTER_SIGN": {"sign": "s"},
        "QID_IM_SET_ROSTER_AVATAR": {"avatar": "a"},
        "QID_IM_SET_USER_PWD": {"old_pwd": "wrong", "new_pwd": "x"},
        "QID_IM_SET_ROSTER_FRD_GID": {"fid": target.friend, "gid": "1"},
        "QID_IM_SET_ROSTER_FRD_NAME": {"fid": target.friend, "name": "n"},
        "QID_IM_GET_USER_INFO": {"uname": target.friend},
        "QID_IM_SET_USER_INFO": {"uname": me, "sex": "1", "age": "30", "birthday": "2000-01-01",
                                 "telephone": "1", "cellphone": "2", "email": "a@b",
                                 "address": "a", "zipcode": "1", "position": "p"},
        "QID_IM_GET_OFFLINE_MSG": {"limit": "10", "after_seq": "0"},
        "QID_IM_RECIVE_OFFLINE_MSG": {"seq": "0"},
        "QID_IM_GET_ROSTER_MSG_HISTORY": {"msgto": target.friend, "days": "1", "before_seq": "9",
                                          "limit": "5"},
        "QID_IM_GET_GROUP_OFFLINE_MSG": {"gid": gid, "limit": "5"},
        "QID_IM_RECIVE_GROUP_OFFLINE_MSG": {"gid": gid, "seq": "0"},
        "QID_IM_GET_GROUP_MSG_HISTORY": {"gid": gid, "days": "1", "before_seq": "9", "limit": "5"},
        "QID_IM_SET_GROUP": {"gname": "g", "type": "1", "exit": "1"},
        "QID_IM_GET_GROUP_PEER_LIST": {"gid": gid, "offset": "0", "limit": "5"},
        "QID_IM_GET_CONTACTS_LIST": {"ver": "0", "limit": "5"},
    }


WRONG = [None, True, -1, 2**63, 2**64 + 1, -2**70, 1.5, "", "\x00", "a\x00b", "x" * 5000, "9" * 30,
         "-", [], {}, [[[]]], {"a": {}}]


def test_every_parameter_of_every_qid_with_every_wrong_value(target):
    """Not random: with the other parameters valid, each parameter of each QID gets each kind
    of wrong value."""
    http = target.server.http(target.http_token())
    for name, params in valid_params(target).items():
        for field in params:
            for value in WRONG:
                status, body, _ = http.call("POST", f"/api/{name}", {**params, field: value})
                assert_json_answer(status, body, f"{name} {field}={value!r:.40}")
    target.assert_alive()


@fuzz(60)
@given(st.sampled_from(QIDS + ["login"]), raw_bodies)
def test_qid_raw_bodies(target, name, raw):
    http = target.server.http(target.http_token())
    status, body, _ = http.call("POST", f"/api/{name}", raw=raw,
                                headers={"Content-Type": "application/json"})
    assert_json_answer(status, body, name)


@fuzz(60)
@given(st.sampled_from(["/admin/users", "/admin/users/bulk", "/admin/depts", "/admin/broadcast"]),
       bodies(["uid", "pwd", "name", "deptid", "users", "pid", "ord", "to", "body", "disabled"]))
def test_admin_parameters(target, path, params):
    status, body, _ = target.server.http(ADMIN_KEY).call("POST", path, raw=as_json(params),
                                                         headers={"Content-Type": "application/json"})
    assert_json_answer(status, body, path)


def form_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@fuzz(150)
@given(st.sampled_from(FILE_PATHS), st.dictionaries(st.sampled_from(FILE_FIELDS), values, max_size=6),
       st.booleans(), st.sampled_from(["GET", "POST"]))
def test_file_endpoint_parameters(target, path, params, sign, method):
    from im.features.files import signature
    token = target.http_token()
    form = {k: form_value(v).encode("utf-8", "surrogatepass") for k, v in params.items()}
    if sign:
        subject = "uid" if path.endswith("head") and form.get("uid") else "filename"
        form["signature"] = signature(token, form.get(subject, b"").decode("utf-8", "replace"),
                                      form.get("offset", b"").decode("utf-8", "replace")).encode()
    query = urllib.parse.urlencode(form)
    http = target.server.http(token)
    if method == "GET" and path != "/file/upload":
        status, body, _ = http.call("GET", f"{path}?{query}")
    else:
        status, body, _ = http.call("POST", path, raw=query.encode(),
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status < 500, (path, params, status, body)
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else json.dumps(body)
    assert not any(mark in text for mark in TRACE_MARKS), text
