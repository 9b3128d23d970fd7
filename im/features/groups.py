"""Groups (PROTOCOL.md §1.9, §2.4): creating and listing them over HTTP, and over TCP
(IM_CHATROOM) inviting, answering, joining, leaving, kicking and dismissing.

Every membership change runs in one transaction holding the group's row lock, so that
concurrent changes of one group (the last admin leaving while another member leaves, two
devices answering one invitation) are serialised. Caches are invalidated and members notified
only after the commit.
"""

import logging

from im import protocol, runtime, shapes, validate
from im.errors import ImError, bad_request
from im.features import membership, presence
from im.protocol import msgid_of
from im.registry import qid, tcp_handler
from im.store import groups as store
from im.timefmt import fmt

log = logging.getLogger("im.groups")

MEMBER, ADMIN = "0", "1"
PRIVATE, PUBLIC = "1", "2"
ACCEPTED, REJECTED = 1, 2
MAX_GID = 50
MAX_GNAME = 500
MAX_FNAME = 200
DATA_PEERS = 500  # members listed in IM_NOTIFY_GROUP_DATA
PAGE_DEFAULT, PAGE_MAX = 500, 5000
FLAGS = {True: True, False: False, "1": True, "0": False, "true": True, "false": False}


# --- shared checks ------------------------------------------------------------------------

def _gid(params: dict, field: str = "gid") -> str:
    return validate.string(params, field, MAX_GID, min_len=1)


def _live_group(cur, gid: str, lock: bool = False) -> dict:
    group = store.get_group(cur, gid, lock=lock)
    if group is None:
        raise ImError("no_such_group", f"no group {gid}")
    return group


def _member(cur, gid: str, uid: str) -> dict:
    member = store.get_member(cur, gid, uid)
    if member is None:
        raise ImError("not_member", f"{uid} is not a member of group {gid}")
    return member


def _peer(row: dict) -> dict:
    """A member as the frames show it: every value a string."""
    return {k: shapes.as_str(v) for k, v in row.items()}


# --- QIDs ---------------------------------------------------------------------------------

@qid("QID_IM_SET_GROUP")
def set_group(caller, params: dict) -> dict:
    """Create a group with the caller as its admin; returns the GID."""
    gname = validate.string(params, "gname", MAX_GNAME, min_len=1)
    gtype = validate.integer(params, "type", default=1, lo=1, hi=2)
    exit_ = validate.integer(params, "exit", default=1, lo=0, hi=1)
    with runtime.db.transaction() as cur:
        gid = store.insert_group(cur, gname, caller.uid, str(gtype), str(exit_))
        store.insert_member(cur, gid, caller.uid, "", ADMIN, 0)
    membership.group_changed(gid)
    log.info("group created gid=%s by=%s type=%s exit=%s", gid, caller.uid, gtype, exit_)
    return shapes.text(gid)


@qid("QID_IM_GET_GROUP_LIST")
def get_group_list(caller, params: dict) -> dict:
    with runtime.db.transaction() as cur:
        return shapes.table(store.groups_of(cur, caller.uid))


@qid("QID_IM_GET_GROUP_PEER_LIST")
def get_group_peer_list(caller, params: dict) -> dict:
    """Members by join order; a private group's list is for its members only."""
    gid = _gid(params)
    offset = validate.integer(params, "offset", default=0, lo=0, hi=10**9)
    limit = validate.integer(params, "limit", default=PAGE_DEFAULT, lo=1, hi=PAGE_MAX)
    with runtime.db.transaction() as cur:
        group = _live_group(cur, gid)
        if group["type"] != PUBLIC:
            _member(cur, gid, caller.uid)
        rows, more = shapes.page(store.peers(cur, gid, offset, limit + 1), limit)
    return shapes.table(rows, more)


# --- IM_CHATROOM --------------------------------------------------------------------------

@tcp_handler(protocol.IM_CHATROOM)
def chatroom(conn, body: dict) -> dict:
    msgid = msgid_of(body)
    if not msgid:
        raise bad_request("msgid", "1-50 characters required")
    kind = body.get("type")
    action = ACTIONS.get(str(kind)) if isinstance(kind, (str, int)) else None
    if action is None or isinstance(kind, bool):
        raise bad_request("type", "must be 0 (invite), 1 (answer), 2 (exit), 3 (kick), "
                                  "4 (dismiss) or 5 (join)")
    return action(conn, msgid, body)


def invitation_frame(inv: dict, from_res: str, to_res: str) -> dict:
    return {"msgid": inv["msgid"], "type": "0", "from": inv["msgfrom"], "from_res": from_res,
            "to": inv["msgto"], "to_res": to_res, "gid": inv["gid"], "gname": inv["gname"] or ""}


def invite(conn, msgid: str, body: dict) -> dict:
    """Type 0. Idempotent by (inviter, msgid): a retry gets the original's ACK."""
    with runtime.db.transaction() as cur:
        earlier = store.get_invitation(cur, conn.uid, msgid)
    if earlier is not None:
        return {"time": fmt(earlier["send_time"])}
    gid = _gid(body)
    to = validate.uid(body.get("to"), "to")
    if not membership.user_exists(to):
        raise ImError("no_such_user", f"no user {to}")
    with runtime.db.transaction() as cur:
        group = _live_group(cur, gid)
        if _member(cur, gid, conn.uid)["right"] != ADMIN and group["type"] == PRIVATE:
            raise ImError("forbidden", "only admins invite to a private group")
        if store.get_member(cur, gid, to) is not None:
            raise _already_member(to, gid)
        sent = store.insert_invitation(cur, msgid, conn.uid, to, gid, group["gname"])
        if sent is None:  # a concurrent retry stored it first
            sent = store.get_invitation(cur, conn.uid, msgid)["send_time"]
            return {"time": fmt(sent)}
    log.info("group invitation gid=%s from=%s to=%s", gid, conn.uid, to)
    inv = {"msgid": msgid, "msgfrom": conn.uid, "msgto": to, "gid": gid, "gname": group["gname"]}
    for target in runtime.router.connections(to):
        target.send(protocol.IM_CHATROOM, invitation_frame(inv, conn.res, target.res))
    return {"time": fmt(sent)}


def _find_invitation(cur, uid: str, msgid: str, inviter) -> dict:
    """The unhandled invitation to `uid` that an answer names (§6.10)."""
    if inviter is not None:
        inv = store.get_invitation(cur, validate.uid(inviter, "to"), msgid)
        if inv is None:
            raise ImError("not_found", "no such invitation")
        if inv["msgto"] != uid:
            raise ImError("forbidden", "only the invited user may answer")
    else:
        found = store.invitations_to(cur, uid, msgid)
        if not found:
            raise ImError("not_found", "no such invitation")
        if len(found) > 1 and found[1]["state"] == 0:
            raise bad_request("to", "several invitations have this msgid: name the inviter")
        inv = found[0]
    if inv["state"] != 0:
        raise ImError("already_handled", "the invitation was answered already")
    return inv


def answer(conn, msgid: str, body: dict) -> dict:
    """Type 1: accept or reject an invitation, once."""
    accept = _flag(body, "accept")
    fname = validate.string(body, "fname", MAX_FNAME, required=False)
    with runtime.db.transaction() as cur:
        inv = _find_invitation(cur, conn.uid, msgid, body.get("to") or None)
        if body.get("gid") is not None and _gid(body) != inv["gid"]:
            raise bad_request("gid", "not the invitation's group")
        if not accept:
            _close_invitation(cur, inv, REJECTED)
    if accept:
        _accept(conn, inv, fname)
    else:
        _forward_rejection(conn, inv)
    return {}


def _flag(body: dict, field: str) -> bool:
    value = body.get(field)
    if isinstance(value, str):
        value = value.lower()
    if isinstance(value, (bool, int, str)) and value in FLAGS:
        return FLAGS[value]
    raise bad_request(field, "must be true or false")


def _close_invitation(cur, inv: dict, state: int) -> None:
    """STATE = state unless another answer got there first."""
    if not store.close_invitation(cur, inv["msgfrom"], inv["msgid"], state):
        raise ImError("already_handled", "the invitation was answered already")


def _accept(conn, inv: dict, fname: str) -> None:
    """An invitee who became a member meanwhile still closes the invitation (STATE 1), so
    that it is not re-sent at every login, and then hears `already_member`."""
    with runtime.db.transaction() as cur:
        group = _live_group(cur, inv["gid"], lock=True)
        _close_invitation(cur, inv, ACCEPTED)
        joined = _admit(cur, group, conn.uid, fname)
    if joined is None:
        raise _already_member(conn.uid, group["gid"])
    _announce_join(group, *joined)


def _forward_rejection(conn, inv: dict) -> None:
    log.info("group invitation rejected gid=%s from=%s by=%s", inv["gid"], inv["msgfrom"], conn.uid)
    for target in runtime.router.connections(inv["msgfrom"]):
        target.send(protocol.IM_CHATROOM, {
            "msgid": inv["msgid"], "type": "1", "from": conn.uid, "from_res": conn.res,
            "to": inv["msgfrom"], "to_res": target.res, "gid": inv["gid"], "accept": False})


def join(conn, msgid: str, body: dict) -> dict:
    """Type 5: join a public group without an invitation."""
    gid = _gid(body)
    fname = validate.string(body, "fname", MAX_FNAME, required=False)
    with runtime.db.transaction() as cur:
        group = _live_group(cur, gid, lock=True)
        if group["type"] != PUBLIC:
            raise ImError("forbidden", "only public groups can be joined without an invitation")
        joined = _admit(cur, group, conn.uid, fname)
        if joined is None:
            raise _already_member(conn.uid, gid)
    _announce_join(group, *joined)
    return {}


def _already_member(uid: str, gid: str) -> ImError:
    return ImError("already_member", f"{uid} is a member of group {gid}")


def _admit(cur, group: dict, uid: str, fname: str) -> tuple[dict, list[str], list[dict]] | None:
    """Add uid as a member (the group row is locked); returns (its row, member uids, the
    first DATA_PEERS + 1 members by join order), or None if uid is a member already."""
    gid = group["gid"]
    if store.get_member(cur, gid, uid) is not None:
        return None
    row = store.insert_member(cur, gid, uid, fname, MEMBER, group["last_seq"])
    return row, store.member_uids(cur, gid), store.peers(cur, gid, 0, DATA_PEERS + 1)


def _announce_join(group: dict, row: dict, members: list[str], peers: list[dict]) -> None:
    """After the commit: PEER_ADD to the other members, GROUP_DATA to the new member."""
    gid, uid = group["gid"], row["uid"]
    membership.group_changed(gid)
    log.info("group member added gid=%s uid=%s", gid, uid)
    added = protocol.encode(protocol.IM_NOTIFY_GROUP_PEER_ADD, {"gid": gid, **_peer(row)})
    runtime.router.deliver_many([m for m in members if m != uid], added)
    shown, more = shapes.page(peers, DATA_PEERS)
    data = {"gid": gid, "gname": group["gname"] or "", "time": fmt(group["createtime"]),
            "type": group["type"], "exit": group["exit"],
            "peers": [{**_peer(p), "show": presence.best_show(p["uid"])} for p in shown],
            "more": "1" if more else "0"}
    runtime.router.deliver(uid, protocol.encode(protocol.IM_NOTIFY_GROUP_DATA, data))


def exit_group(conn, msgid: str, body: dict) -> dict:
    """Type 2: leave. The last admin leaving hands over to the longest-standing member; the
    last member leaving dismisses the group."""
    gid = _gid(body, "rid")
    with runtime.db.transaction() as cur:
        group = _live_group(cur, gid, lock=True)
        me = _member(cur, gid, conn.uid)
        if group["exit"] == "0":
            raise ImError("cannot_exit", f"members cannot leave group {gid}")
        store.remove_member(cur, gid, conn.uid)
        remaining = store.member_uids(cur, gid)
        if not remaining:
            store.dismiss_group(cur, gid)
        promoted = store.ensure_admin(cur, gid) if remaining and me["right"] == ADMIN else None
    membership.group_changed(gid)
    log.info("group member left gid=%s uid=%s promoted=%s dismissed=%s",
             gid, conn.uid, promoted or "-", not remaining)
    for uid in remaining:
        for target in runtime.router.connections(uid):
            target.send(protocol.IM_CHATROOM, {
                "msgid": msgid, "type": "2", "from": conn.uid, "from_res": conn.res,
                "to": uid, "to_res": target.res, "rid": gid})
    return {}


def kick(conn, msgid: str, body: dict) -> dict:
    """Type 3 (ext): an admin removes a member."""
    gid = _gid(body)
    to = validate.uid(body.get("to"), "to")
    if to == conn.uid:
        raise bad_request("to", "cannot kick yourself: exit (type 2) instead")
    with runtime.db.transaction() as cur:
        _live_group(cur, gid, lock=True)
        me = store.get_member(cur, gid, conn.uid)
        if me is None or me["right"] != ADMIN:
            raise ImError("forbidden", "only admins can kick")
        _member(cur, gid, to)
        members = store.member_uids(cur, gid)
        store.remove_member(cur, gid, to)
    membership.group_changed(gid)
    log.info("group member kicked gid=%s uid=%s by=%s", gid, to, conn.uid)
    _peer_deleted(members, {"gid": gid, "uid": to, "by": conn.uid})
    return {}


def dismiss(conn, msgid: str, body: dict) -> dict:
    """Type 4 (ext): the creator dismisses the group; it disappears at once."""
    gid = _gid(body)
    with runtime.db.transaction() as cur:
        group = _live_group(cur, gid, lock=True)
        if group["userid"] != conn.uid:
            raise ImError("forbidden", "only the creator can dismiss the group")
        members = store.member_uids(cur, gid)
        store.dismiss_group(cur, gid)
    membership.group_changed(gid)
    log.info("group dismissed gid=%s by=%s", gid, conn.uid)
    _peer_deleted(members, {"gid": gid, "uid": "*"})
    return {}


def _peer_deleted(members: list[str], body: dict) -> None:
    runtime.router.deliver_many(members, protocol.encode(protocol.IM_NOTIFY_GROUP_PEER_DEL, body))


ACTIONS = {"0": invite, "1": answer, "2": exit_group, "3": kick, "4": dismiss, "5": join}
