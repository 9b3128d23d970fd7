"""What still waits for an answer: QID_IM_GET_PENDING_REQ (PROTOCOL.md §2.6) both ways, and the
re-send at login (§1.5) of what is addressed to the user.

A client that was offline learns here of the friend requests and group invitations addressed
to it and of its own that nobody has answered yet.
"""

import logging

from im import protocol, runtime, shapes, validate
from im.batcher import database_lookup
from im.errors import ImError
from im.features import friends, groups
from im.registry import Caller, on_login, qid
from im.store import pending as store

log = logging.getLogger("im.pending")

LIMIT = (500, 5000)   # (default, max) rows
RESEND_LIMIT = 500    # friend requests re-sent at one login


@qid("QID_IM_GET_PENDING_REQ")
def get_pending_req(caller: Caller, params: dict) -> dict:
    limit = validate.integer(params, "limit", default=LIMIT[0], lo=1, hi=LIMIT[1])
    with runtime.db.transaction() as cur:
        rows = store.pending(cur, caller.uid, limit + 1)
    page, more = shapes.page(rows, limit)
    return shapes.table(page, more)


_unreceived = database_lookup(  # a login storm's reads share their queries
    "resend", lambda cur, uids: store.unreceived_to(cur, uids, RESEND_LIMIT))


@on_login
def resend(conn) -> None:
    """§1.5: every unhandled friend request and group invitation to the user that no device of
    theirs has received comes again, requests first. One lone read (no transaction), shared
    with the logins made meanwhile: a login with nothing pending costs a share of one query."""
    try:
        requests, invitations = _unreceived.get(conn.uid) or ((), ())
    except ImError as err:
        log.warning("cannot re-send requests to %s: %s", conn.uid, err.text)
        return
    for req in requests:
        conn.send(protocol.IM_ROSTER_ADD_REQ, friends.request_frame(req, "", conn.res))
    for inv in invitations:
        conn.send(protocol.IM_CHATROOM, groups.invitation_frame(inv, "", conn.res))
