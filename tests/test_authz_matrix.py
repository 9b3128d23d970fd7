"""Who may do what (PROTOCOL.md §1.6-§1.9, §2, §3, §4, §6.2): every frame and QID that names
another user, group, message or file, tried by someone who has no right to it.

The world: jack owns a private group (rose is a plain member) and a file; jack and rose are
friends and have talked; jack has a pending friend request to carl and a pending invitation of
carl. Eve is nobody's friend, no member, no addressee, no owner, no admin. Each row of the
matrix is one attempt; it must be refused with the contract's code (or, for a receipt, ignored)
and leave every row of the world's data exactly as it was.
"""

import base64
import hashlib
import hmac
import http.client
import json
import time
import urllib.parse
import uuid
from dataclasses import dataclass

import pytest

from im import protocol
from im.client import RequestFailed, rows
from support import ADMIN_KEY, PASSWORD

MSG, ACK, PRESENCE = protocol.IM_MESSAGE, protocol.IM_MESSAGE_ACK, protocol.IM_PRESENCE
ADD_REQ, ADD_RESP, DEL_REQ = protocol.IM_ROSTER_ADD_REQ, protocol.IM_ROSTER_ADD_RESP, protocol.IM_ROSTER_DEL_REQ
CHATROOM = protocol.IM_CHATROOM
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class World:
    server: object
    jack: str
    rose: str
    carl: str
    eve: str
    gid: str          # jack's private group, rose a plain member
    public_gid: str   # jack's public group
    message: str      # jack -> rose, unreceived
    request: str      # jack's friend request to carl, pending
    invitation: str   # jack's invitation of carl to gid, pending
    file: str         # jack's complete file
    partial: str      # jack's half-uploaded file
    clients: dict     # uid -> logged-in Client
    tokens: dict      # uid -> HTTP token

    def snapshot(self) -> dict:
        """Every stored row about the world's users, groups and files (eve's own roster header
        is hers to change: a group mark stamps its update_time)."""
        users = [self.jack, self.rose, self.carl, self.eve]
        victims = users[:3]
        gids = [self.gid, self.public_gid]
        files = [self.file, self.partial]
        queries = {
            "messages": ("SELECT * FROM tp_im_message WHERE msgfrom = ANY(%s) OR msgto = ANY(%s)", (users, users)),
            "group_messages": ("SELECT * FROM tp_im_message_group WHERE gid = ANY(%s)", (gids,)),
            "groups": ("SELECT * FROM tp_im_group WHERE gid = ANY(%s)", (gids,)),
            "peers": ("SELECT * FROM tp_im_group_peer WHERE gid = ANY(%s) OR userid = ANY(%s)", (gids, users)),
            "invitations": ("SELECT * FROM tp_im_group_req WHERE msgfrom = ANY(%s) OR msgto = ANY(%s)", (users, users)),
            "requests": ("SELECT * FROM tp_im_roster_req WHERE msgfrom = ANY(%s) OR msgto = ANY(%s)", (users, users)),
            "friends": ("SELECT * FROM tp_im_roster_frd WHERE userid = ANY(%s) OR fid = ANY(%s)", (users, users)),
            "rosters": ("SELECT * FROM tp_im_roster WHERE userid = ANY(%s)", (victims,)),
            "users": ("SELECT * FROM im_user WHERE uid = ANY(%s)", (users,)),
            "mailboxes": ("SELECT * FROM im_mailbox WHERE uid = ANY(%s)", (users,)),
            "files": ("SELECT * FROM im_file WHERE name = ANY(%s)", (files,)),
        }
        return {name: sorted(map(repr, self.server.sql(q, args))) for name, (q, args) in queries.items()}


def _sign(token: str, subject: str, offset: str) -> str:
    return hmac.new(token.encode(), f"{subject}\n{offset}".encode(), hashlib.sha256).hexdigest()


def upload(server, token: str, name: str, data: bytes, offset: int, filesize: int) -> int:
    params = {"filename": name, "filesize": filesize, "offset": offset,
              "bin": base64.b64encode(data).decode(), "signature": _sign(token, name, str(offset))}
    status, _, _ = server.http(token).call("POST", "/file/upload",
                                           raw=urllib.parse.urlencode(params).encode(), headers=FORM)
    return status


@pytest.fixture(scope="module")
def world(server):
    prefix = "az" + uuid.uuid4().hex[:8]
    jack, rose, carl, eve = (f"{prefix}_{n}" for n in ("jack", "rose", "carl", "eve"))
    server.admin().admin("POST", "/users/bulk", {"users": [
        {"uid": u, "pwd": PASSWORD} for u in (jack, rose, carl, eve)]})
    clients = {u: server.client() for u in (jack, rose, carl, eve)}
    for uid, client in clients.items():
        client.login(uid, PASSWORD, res="pc")
    j, r, c, e = (clients[u] for u in (jack, rose, carl, eve))
    tokens = {u: server.http().login(u, PASSWORD) for u in (jack, rose, carl, eve)}
    jack_http = server.http(tokens[jack])

    # jack and rose become friends; jack asks carl too (left pending)
    j.request(ADD_REQ, {"msgid": "f-rose", "to": rose, "msg": "hi"})
    r.request(ADD_RESP, {"msgid": "f-rose", "to": jack, "state": "1"})
    request = "f-carl"
    j.request(ADD_REQ, {"msgid": request, "to": carl, "msg": "hi"})
    jack_http.qid("QID_IM_SET_USER_INFO", uname=jack, sex="1", age="40", address="secret street")

    gid = jack_http.qid("QID_IM_SET_GROUP", gname="private", type="1")["result"]
    public_gid = jack_http.qid("QID_IM_SET_GROUP", gname="public", type="2")["result"]
    j.request(CHATROOM, {"msgid": "g-rose", "type": "0", "gid": gid, "to": rose})
    r.request(CHATROOM, {"msgid": "g-rose", "type": "1", "gid": gid, "to": jack, "accept": True})
    invitation = "g-carl"
    j.request(CHATROOM, {"msgid": invitation, "type": "0", "gid": gid, "to": carl})
    message = uuid.uuid4().hex
    j.message(rose, "for rose only", msgid=message)
    j.message(gid, "for members only", group=True)

    file, partial = uuid.uuid4().hex + ".jpg", uuid.uuid4().hex + ".bin"
    assert upload(server, tokens[jack], file, b"jack's photo", 0, 12) == 200
    assert upload(server, tokens[jack], partial, b"half", 0, 8) == 200
    e.request(PRESENCE, {"type": "online", "show": "online"})
    for client in clients.values():
        client.drain(0.2)
    yield World(server, jack, rose, carl, eve, gid, public_gid, message, request, invitation,
                file, partial, clients, tokens)
    for client in clients.values():
        client.close()


# --- TCP frames ---------------------------------------------------------------------------
# (who, msgtype, body with {placeholders} naming the world, expected error code)

TCP = [
    ("eve", MSG, {"type": "1", "to": "{gid}", "body": "let me in"}, "not_member"),
    ("eve", ADD_RESP, {"msgid": "{request}", "to": "{jack}", "state": "1"}, "forbidden"),
    ("eve", ADD_RESP, {"msgid": "{request}", "to": "{jack}", "state": "2"}, "forbidden"),
    ("eve", ADD_RESP, {"msgid": "{request}", "state": "1"}, "not_found"),
    ("eve", DEL_REQ, {"to": "{jack}"}, "not_friend"),
    ("eve", CHATROOM, {"type": "0", "gid": "{gid}", "to": "{eve}"}, "not_member"),
    ("eve", CHATROOM, {"type": "0", "gid": "{gid}", "to": "{carl}"}, "not_member"),
    ("eve", CHATROOM, {"type": "1", "msgid": "{invitation}", "gid": "{gid}", "to": "{jack}",
                       "accept": True}, "forbidden"),
    ("eve", CHATROOM, {"type": "2", "rid": "{gid}"}, "not_member"),
    ("eve", CHATROOM, {"type": "3", "gid": "{gid}", "to": "{rose}"}, "forbidden"),
    ("eve", CHATROOM, {"type": "3", "gid": "{public_gid}", "to": "{jack}"}, "forbidden"),
    ("eve", CHATROOM, {"type": "4", "gid": "{gid}"}, "forbidden"),
    ("eve", CHATROOM, {"type": "4", "gid": "{public_gid}"}, "forbidden"),
    ("eve", CHATROOM, {"type": "5", "gid": "{gid}"}, "forbidden"),
    ("eve", PRESENCE, {"type": "ack", "to": "{jack}", "to_res": "pc", "show": "online"}, "not_friend"),
    ("rose", CHATROOM, {"type": "0", "gid": "{gid}", "to": "{eve}"}, "forbidden"),
    ("rose", CHATROOM, {"type": "3", "gid": "{gid}", "to": "{jack}"}, "forbidden"),
    ("rose", CHATROOM, {"type": "4", "gid": "{gid}"}, "forbidden"),
    ("carl", CHATROOM, {"type": "4", "gid": "{gid}"}, "forbidden"),
    ("carl", ADD_RESP, {"msgid": "f-rose", "to": "{jack}", "state": "1"}, "forbidden"),
]


def fill(template, world: World):
    """The template with {placeholders} replaced by the world's names."""
    if isinstance(template, dict):
        return {k: fill(v, world) for k, v in template.items()}
    if isinstance(template, str):
        return template.format(**vars(world))
    return template


TYPE_NAMES = {value: name for name, value in vars(protocol).items() if name.startswith("IM_")}


def row_id(row) -> str:
    who, msgtype, body, code = row
    return f"{who}-{TYPE_NAMES[msgtype]}-{body.get('type', '')}-{code}"


@pytest.mark.parametrize("who, msgtype, body, code", TCP, ids=[row_id(r) for r in TCP])
def test_frame_by_an_outsider_is_refused_and_changes_nothing(world, who, msgtype, body, code):
    client = world.clients[getattr(world, who)]
    before = world.snapshot()
    with pytest.raises(RequestFailed) as refused:
        client.request(msgtype, fill(body, world))
    assert refused.value.code == code
    assert world.snapshot() == before
    assert world.server.proc.poll() is None


RECEIPTS = [
    {"type": 196609, "msgid": "{message}", "from": "{jack}"},
    {"type": 196609, "msgid": "{message}"},
    {"type": 196609, "upto": 1000000},
    {"type": 200705, "msgid": "{request}", "from": "{jack}"},
    {"type": 200705, "msgid": "{request}"},
    {"type": 200709, "msgid": "{invitation}", "from": "{jack}"},
    {"type": 200709, "msgid": "{invitation}"},
]


@pytest.mark.parametrize("body", RECEIPTS, ids=lambda b: f"{b['type']}-{'-'.join(sorted(b))}")
def test_receipt_of_someone_elses_message_is_ignored(world, body):
    eve = world.clients[world.eve]
    before = world.snapshot()
    eve.send(ACK, fill(body, world))
    eve.assert_silent(0.3, match=ACK)
    time.sleep(0.3)  # receipts are written by a batch writer
    assert world.snapshot() == before


# --- QIDs ---------------------------------------------------------------------------------
# (QID, params, expected status, expected code)

QIDS = [
    ("QID_IM_GET_GROUP_PEER_LIST", {"gid": "{gid}"}, 403, "not_member"),
    ("QID_IM_GET_GROUP_OFFLINE_MSG", {"gid": "{gid}"}, 403, "not_member"),
    ("QID_IM_RECIVE_GROUP_OFFLINE_MSG", {"gid": "{gid}", "seq": "1"}, 403, "not_member"),
    ("QID_IM_GET_GROUP_MSG_HISTORY", {"gid": "{gid}"}, 403, "not_member"),
    ("QID_IM_SET_USER_INFO", {"uname": "{jack}", "sex": "2"}, 403, "forbidden"),
    ("QID_IM_SET_ROSTER_FRD_GID", {"fid": "{jack}", "gid": "1"}, 404, "not_found"),
    ("QID_IM_SET_ROSTER_FRD_NAME", {"fid": "{jack}", "name": "mine"}, 404, "not_found"),
]


@pytest.mark.parametrize("name, params, status, code", QIDS, ids=[q[0] for q in QIDS])
def test_qid_by_an_outsider_is_refused_and_changes_nothing(world, name, params, status, code):
    before = world.snapshot()
    got, body, _ = world.server.http(world.tokens[world.eve]).call("POST", f"/api/{name}",
                                                                     fill(params, world))
    assert (got, body["type"], body["code"]) == (status, "error", code)
    assert world.snapshot() == before


# Reads that name someone else succeed but show eve nothing that is not hers.
READS = [
    ("QID_IM_GET_ROSTER_MSG_HISTORY", {"msgto": "{jack}"}),
    ("QID_IM_GET_ROSTER_MSG_HISTORY", {"msgto": "{rose}"}),
    ("QID_IM_GET_OFFLINE_MSG", {}),
    ("QID_IM_GET_OFFLINE_MSG", {"after_seq": "0"}),
    ("QID_IM_GET_GROUP_OFFLINE_MSG", {}),
    ("QID_IM_GET_GROUP_LIST", {}),
    ("QID_IM_GET_PENDING_REQ", {}),
]


@pytest.mark.parametrize("name, params", READS, ids=[f"{q[0]}-{'-'.join(q[1])}" for q in READS])
def test_reads_show_an_outsider_nothing_of_others(world, name, params):
    before = world.snapshot()
    result = world.server.http(world.tokens[world.eve]).qid(name, **fill(params, world))
    assert result["type"] == "table" and rows(result) == []
    assert world.snapshot() == before


def test_marks_by_an_outsider_touch_only_her_own_mailbox(world):
    before = world.snapshot()
    eve = world.server.http(world.tokens[world.eve])
    assert eve.qid("QID_IM_RECIVE_OFFLINE_MSG", seq="1000000")["result"] == "1"
    assert eve.qid("QID_IM_RECIVE_OFFLINE_MSG", time="2099-01-01 00:00:00")["result"] == "1"
    assert eve.qid("QID_IM_RECIVE_GROUP_OFFLINE_MSG", time="2099-01-01 00:00:00")["result"] == "1"
    assert world.snapshot() == before


def test_profile_of_a_stranger_shows_only_directory_fields(world):
    info = world.server.http(world.tokens[world.eve]).qid("QID_IM_GET_USER_INFO", uname=world.jack)
    fields = {c["n"] for c in info["result"]}
    assert "uname" in fields and not fields & {"sex", "age", "birthday", "address", "zipcode"}
    assert "secret street" not in json.dumps(info)


def test_presence_never_reaches_a_stranger(world):
    jack = world.clients[world.jack]
    jack.request(PRESENCE, {"type": "online", "show": "dnd"})
    jack.request(PRESENCE, {"type": "leave"})
    world.clients[world.eve].assert_silent(0.3, match=PRESENCE)


# --- files --------------------------------------------------------------------------------

def test_upload_to_someone_elses_file_is_forbidden(world):
    before = world.snapshot()
    token = world.tokens[world.eve]
    assert upload(world.server, token, world.partial, b"evil", 4, 8) == 403
    assert upload(world.server, token, world.partial, b"", 0, 8) == 403
    assert upload(world.server, token, world.file, b"evil photo!!", 0, 12) == 403
    assert world.snapshot() == before
    path = f"/file/download?filename={world.file}&signature={_sign(token, world.file, '')}"
    assert world.server.http(token).call("GET", path)[1] == b"jack's photo"


def test_a_signature_made_with_another_token_is_refused(world):
    eve, jack = world.tokens[world.eve], world.tokens[world.jack]
    path = f"/file/download?filename={world.file}&signature={_sign(jack, world.file, '')}"
    assert world.server.http(eve).call("GET", path)[0] == 401


# --- admin --------------------------------------------------------------------------------

ADMIN = [("GET", "/admin/users/{jack}", None), ("PATCH", "/admin/users/{jack}", {"disabled": True}),
         ("POST", "/admin/users", {"uid": "{eve}x", "pwd": "x"}), ("GET", "/admin/online", None),
         ("POST", "/admin/broadcast", {"to": "*", "body": "spam"}), ("GET", "/ops/sessions", None),
         ("GET", "/ops/status", None)]


@pytest.mark.parametrize("method, path, body", ADMIN, ids=[f"{m}-{p}" for m, p, _ in ADMIN])
def test_admin_api_refuses_a_user_token_and_other_addresses(world, method, path, body):
    before = world.snapshot()
    path, body = fill(path, world), fill(body, world)
    status, answer, _ = world.server.http().call(method, path, body, token=world.tokens[world.eve])
    assert (status, answer["code"]) == (401, "not_authenticated")
    # the right key from an address outside admin_allow: the admin API does not exist there
    conn = http.client.HTTPConnection("127.0.0.1", world.server.http_port, timeout=10,
                                      source_address=("127.0.0.2", 0))
    conn.request(method, path, json.dumps(body) if body is not None else None,
                 {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 404 and json.loads(response.read())["code"] == "not_found"
    conn.close()
    assert world.snapshot() == before
