"""QID_IM_GET_PENDING_REQ (PROTOCOL.md §2.6): what still waits for an answer, both ways.

A client that was offline learns here of the friend requests and group invitations addressed
to it and of its own that nobody has answered yet.
"""

from im import runtime, shapes, validate
from im.registry import Caller, qid
from im.store import pending as store

LIMIT = (500, 5000)   # (default, max) rows


@qid("QID_IM_GET_PENDING_REQ")
def get_pending_req(caller: Caller, params: dict) -> dict:
    limit = validate.integer(params, "limit", default=LIMIT[0], lo=1, hi=LIMIT[1])
    with runtime.db.transaction() as cur:
        rows = store.pending(cur, caller.uid, limit + 1)
    page, more = shapes.page(rows, limit)
    return shapes.table(page, more)
