"""Friend requests, answers and removals over TCP (PROTOCOL.md §1.7, §1.5 re-send, §6.3, §6.10).

Requests are identified by (sender, msgid). A request is forwarded to every logged-in
connection of its addressee, and re-sent at each login until it is answered or receipted
(the re-send is im/features/pending.py's; the 200705 receipt itself is handled with the other
receipts, in the chat feature).
"""

import json
import logging

from im import protocol, runtime
from im.errors import ImError, bad_request
from im.features import membership, presence
from im.protocol import encode, msgid_of
from im.registry import tcp_handler
from im.store import friends as store
from im.timefmt import fmt

log = logging.getLogger("im.friends")

MAX_MSG = 500
MAX_FNAME = 50
ACCEPT, REJECT = 1, 2
DEFAULT_GROUP = "1"


# --- checks ----------------------------------------------------------------------------

def _msgid(body: dict) -> str:
    msgid = msgid_of(body)
    if not msgid:
        raise bad_request("msgid", "1-50 characters required")
    return msgid


def _uid(body: dict, field: str = "to") -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value or "\x00" in value:
        raise bad_request(field, "required, without NUL characters")
    return value


def _request_msg(body: dict) -> str:
    msg = body.get("msg", "")
    if msg is None:
        return ""
    if not isinstance(msg, str):
        raise bad_request("msg", "must be a string")
    if len(msg) > MAX_MSG:
        raise ImError("body_too_long", f"msg: longer than {MAX_MSG} characters")
    return msg


def _answer_state(body: dict) -> int:
    state = str(body.get("state", ACCEPT))
    if state not in ("1", "2"):
        raise bad_request("state", "must be 1 (accept) or 2 (reject)")
    return int(state)


def _answer_names(raw) -> dict[str, str]:
    """The answer's `msg`: a JSON string {req_gid, req_name, resp_gid, resp_name}, all optional."""
    if raw in (None, ""):
        return {}
    try:
        names = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise bad_request("msg", "must be a JSON object string") from None
    if not isinstance(names, dict):
        raise bad_request("msg", "must be a JSON object string")
    clean = {}
    for key in ("req_gid", "req_name", "resp_gid", "resp_name"):
        value = names.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise bad_request(f"msg.{key}", "must be a string")
        if len(str(value)) > MAX_FNAME:
            raise bad_request(f"msg.{key}", f"longer than {MAX_FNAME} characters")
        clean[key] = str(value)
    return clean


def _done(body: dict) -> dict | None:
    """Success: an ACK only for a frame that carries a msgid."""
    return {} if msgid_of(body) else None


# --- IM_ROSTER_ADD_REQ -----------------------------------------------------------------

def request_frame(req: store.Request, from_res: str, to_res: str) -> dict:
    return {"msgid": req.msgid, "from": req.msgfrom, "from_res": from_res, "to": req.msgto,
            "to_res": to_res, "time": fmt(req.send_time), "msg": req.msg}


@tcp_handler(protocol.IM_ROSTER_ADD_REQ)
def add_request(conn, body: dict) -> dict:
    msgid = _msgid(body)
    with runtime.db.transaction() as cur:
        stored = store.request_time(cur, conn.uid, msgid)
    if stored is not None:  # a retry: the original's ACK, nothing stored or forwarded again
        return {"time": fmt(stored)}
    to, msg = _uid(body), _request_msg(body)
    if to == conn.uid:
        raise bad_request("to", "cannot befriend yourself")
    if not membership.user_exists(to):
        raise ImError("no_such_user", f"no user {to}")
    if membership.are_friends(conn.uid, to):
        raise ImError("already_friends", f"{to} is already your friend")
    with runtime.db.transaction() as cur:
        sent = store.insert_request(cur, conn.uid, msgid, to, msg)
        if sent is None:  # a concurrent retry stored it first
            return {"time": fmt(store.request_time(cur, conn.uid, msgid))}
    log.info("friend request %s -> %s msgid=%s", conn.uid, to, msgid)
    req = store.Request(msgid, conn.uid, to, msg, 0, sent)
    for dst in runtime.router.connections(to):
        dst.send(protocol.IM_ROSTER_ADD_REQ, request_frame(req, conn.res, dst.res))
    return {"time": fmt(sent)}


# --- IM_ROSTER_ADD_RESP ----------------------------------------------------------------

def _find_request(cur, responder: str, msgid: str, requester: str | None) -> store.Request:
    """The unhandled request this answer is about, locked (§6.10)."""
    if requester is not None:
        req = store.lock_request(cur, requester, msgid)
        if req is None:
            raise ImError("not_found", "no such friend request")
        if req.msgto != responder:
            raise ImError("forbidden", "only the addressee may answer a friend request")
    else:
        found = store.lock_requests_to(cur, responder, msgid)
        if not found:
            raise ImError("not_found", "no such friend request")
        unhandled = [r for r in found if r.state == 0]
        if len(unhandled) > 1:
            raise bad_request("to", "several requests have this msgid: name the requester")
        req = unhandled[0] if unhandled else found[0]
    if req.state != 0:
        raise ImError("already_handled", "this friend request was already answered")
    return req


def _group_of(cur, uid: str, wanted: str | None) -> str:
    """`wanted` if it is one of uid's roster groups, else uid's default group."""
    try:
        groups = json.loads(store.roster_groups(cur, uid) or "[]")
    except ValueError:
        groups = []
    groups = [g for g in groups if isinstance(g, dict) and "gid" in g] if isinstance(groups, list) else []
    gids = [str(g["gid"]) for g in groups]
    if wanted in gids:
        return wanted
    default = [str(g["gid"]) for g in groups if g.get("def") is True]
    return (default or gids or [DEFAULT_GROUP])[0]


def _befriend(cur, req: store.Request, names: dict[str, str]) -> None:
    requester, responder = req.msgfrom, req.msgto
    store.add_friend(cur, requester, responder, _group_of(cur, requester, names.get("req_gid")),
                     names.get("req_name", ""))
    store.add_friend(cur, responder, requester, _group_of(cur, responder, names.get("resp_gid")),
                     names.get("resp_name", ""))


def _announce_friendship(a: str, b: str) -> None:
    membership.friends_changed(a, b)
    runtime.router.deliver(a, encode(protocol.IM_NOTIFY_ROSTER_ADD, {"frd": b}))
    runtime.router.deliver(b, encode(protocol.IM_NOTIFY_ROSTER_ADD, {"frd": a}))
    presence.exchange(a, b)


@tcp_handler(protocol.IM_ROSTER_ADD_RESP)
def answer_request(conn, body: dict) -> dict | None:
    msgid = _msgid(body)
    requester = None if body.get("to") in (None, "") else _uid(body)
    state, names = _answer_state(body), _answer_names(body.get("msg"))
    with runtime.db.transaction() as cur:
        req = _find_request(cur, conn.uid, msgid, requester)
        store.set_state(cur, req, state)
        if state == ACCEPT:
            _befriend(cur, req, names)
    log.info("friend request %s -> %s msgid=%s %s", req.msgfrom, req.msgto, msgid,
             "accepted" if state == ACCEPT else "rejected")
    if state == ACCEPT:
        _announce_friendship(req.msgfrom, req.msgto)
    else:
        runtime.router.deliver(req.msgfrom, encode(protocol.IM_ROSTER_ADD_RESP, {
            "msgid": msgid, "from": conn.uid, "to": req.msgfrom, "state": str(REJECT)}))
    return {}


# --- IM_ROSTER_DEL_REQ -----------------------------------------------------------------

@tcp_handler(protocol.IM_ROSTER_DEL_REQ)
def delete_friend(conn, body: dict) -> dict | None:
    to = _uid(body)
    with runtime.db.transaction() as cur:
        removed = store.delete_friendship(cur, conn.uid, to)
    if not removed:
        raise ImError("not_friend", f"{to} is not your friend")
    log.info("friendship %s - %s removed", conn.uid, to)
    membership.friends_changed(conn.uid, to)
    runtime.router.deliver(conn.uid, encode(protocol.IM_NOTIFY_ROSTER_DEL, {"frd": to}),
                           exclude=conn)
    runtime.router.deliver(to, encode(protocol.IM_NOTIFY_ROSTER_DEL, {"frd": conn.uid}),
                           exclude=conn)
    return _done(body)
