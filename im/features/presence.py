"""Presence between friends over TCP (PROTOCOL.md §1.8, §6.15).

Only announced connections take part: `conn.presence` holds the announced `show`, None while
the connection is invisible. Presence goes to the announced connections of friends only.

Choices where the contract is silent:
- `update`/`state`/`ack` from a connection that never sent `online` is `bad_request` (an
  invisible connection cannot change or reveal a presence it does not have); `leave` from it is
  a harmless no-op.
- `online` without `show` means `show "online"`; `ack` without `show` repeats the sender's.
- `ack` without `to_res` goes to every announced connection of that friend.
"""

import logging
from typing import NamedTuple

from im import protocol, runtime
from im.errors import ImError, bad_request
from im.features import membership
from im.protocol import msgid_of
from im.registry import on_disconnect, on_event, tcp_handler

log = logging.getLogger("im.presence")

SHOWS = ("chat", "online", "dnd", "away", "xa", "offline")  # most available first (§6.15)
RANK = {show: rank for rank, show in enumerate(SHOWS)}


def best_show(uid: str) -> str:
    """The most available show among uid's announced connections; "offline" when none."""
    shows = [c.presence for c in runtime.router.connections(uid) if c.presence is not None]
    return min(shows, key=lambda s: RANK.get(s, len(SHOWS)), default="offline")


def exchange(a: str, b: str) -> None:
    """Tell each of two (new) friends the current presence of the other's announced connections."""
    _send_all(a, b, "online")
    _send_all(b, a, "online")


def _announced(uid: str) -> list:
    return [c for c in runtime.router.connections(uid) if c.presence is not None]


def _frame(kind: str, src, dst, show: str) -> dict:
    return {"type": kind, "from": src.uid, "from_res": src.res, "to": dst.uid,
            "to_res": dst.res, "show": show}


def _send_all(src_uid: str, dst_uid: str, kind: str) -> None:
    """Send every announced connection of src_uid to every announced connection of dst_uid."""
    targets = _announced(dst_uid)
    for src in _announced(src_uid):
        for dst in targets:
            dst.send(protocol.IM_PRESENCE, _frame(kind, src, dst, src.presence))


def _broadcast(conn, kind: str, show: str) -> frozenset:
    """Send this connection's presence to every announced connection of every friend;
    returns the friends."""
    friends = membership.friends(conn.uid)
    for friend in friends:
        for dst in _announced(friend):
            dst.send(protocol.IM_PRESENCE, _frame(kind, conn, dst, show))
    return friends


def _show(body: dict, default: str | None = None) -> str:
    show = body.get("show", default)
    if show not in SHOWS:
        raise bad_request("show", f"must be one of {', '.join(SHOWS)}")
    return show


def _require_announced(conn) -> None:
    if conn.presence is None:
        raise ImError("bad_request", "announce presence with type online first")


def _online(conn, body: dict) -> None:
    conn.presence = _show(body, "online")
    for friend in _broadcast(conn, "online", conn.presence):
        for src in _announced(friend):
            conn.send(protocol.IM_PRESENCE, _frame("ack", src, conn, src.presence))


def _state(conn, body: dict) -> None:
    _require_announced(conn)
    conn.presence = _show(body)
    _broadcast(conn, "state", conn.presence)


def leave(conn) -> None:
    """End this connection's announcement: friends see `leave` once per announcement."""
    if conn.presence is None:
        return
    conn.presence = None
    _broadcast(conn, "leave", "offline")


def _ack(conn, body: dict) -> None:
    _require_announced(conn)
    show = _show(body, conn.presence)
    to, to_res = body.get("to"), body.get("to_res") or None
    if not isinstance(to, str) or not to:
        raise bad_request("to", "required")
    if to_res is not None and not isinstance(to_res, str):
        raise bad_request("to_res", "must be a string")
    if not membership.are_friends(conn.uid, to):
        if msgid_of(body):
            raise ImError("not_friend", f"{to} is not your friend")
        return
    for dst in _announced(to):
        if to_res is None or dst.res == to_res:
            dst.send(protocol.IM_PRESENCE, _frame("ack", conn, dst, show))


ACTIONS = {"online": _online, "update": _state, "state": _state,
           "leave": lambda conn, body: leave(conn), "ack": _ack}


@tcp_handler(protocol.IM_PRESENCE)
def presence(conn, body: dict) -> dict | None:
    kind = body.get("type")
    action = ACTIONS.get(kind) if isinstance(kind, str) else None
    if action is None:
        raise bad_request("type", f"must be one of {', '.join(ACTIONS)}")
    action(conn, body)
    return {} if msgid_of(body) else None


@on_disconnect
def _leave_on_disconnect(conn) -> None:
    """However an announced connection ends, friends see it leave — unless a new login on the
    same resource has already announced itself (a conflict replaced this connection)."""
    if conn.presence is None:
        return
    successor = any(c is not conn and c.res == conn.res and c.presence is not None
                    for c in runtime.router.connections(conn.uid))
    if successor:
        conn.presence = None
        return
    leave(conn)


class _Gone(NamedTuple):
    """A session of a crashed cluster node, as `_broadcast` sees a connection."""
    uid: str
    res: str


@on_event("node_down")
def _leave_for_dead_node(event: dict) -> None:
    """A cluster node died without saying goodbye (im/tcp/router/redis.py reaped it): friends
    connected here see its announced sessions leave. Each process raises the event itself and
    reaches only its own connections, so every friend's connection gets one `leave`."""
    gone = [_Gone(uid, res) for uid, res, show in event.get("sessions", ()) if show]
    for session in gone:
        _broadcast(session, "leave", "offline")
    if gone:
        log.info("node %s down: %d announced sessions left", event.get("node"), len(gone))
