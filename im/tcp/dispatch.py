"""Frame dispatch: look up the handler by msgtype, check authentication, call it, and turn
its result or its ImError into the ACK of PROTOCOL.md §1.4. The only place that does so.
"""

import logging
import time

from im import metrics, protocol, registry
from im.protocol import msgid_of
from im.errors import ImError

log = logging.getLogger("im.dispatch")

COUNTED_AS_BAD = {"bad_request", "unknown_type", "not_authenticated"}
# receipts name another sender's msgid (their handler checks it); heartbeats ignore msgid
FREE_MSGID = {protocol.IM_MESSAGE_ACK, protocol.IM_HEARTBEAT}


def dispatch(conn, frame: protocol.Frame) -> None:
    started = time.perf_counter()
    _dispatch(conn, frame)
    metrics.handler_seconds(frame.msgtype).observe(time.perf_counter() - started)


def dispatch_inline(conn, frame: protocol.Frame) -> bool:
    """Handle `frame` now, from the read callback, if its handler registered an `inline`
    predicate that holds for it; False if it needs `dispatch` in a greenlet."""
    will_not_block = registry.TCP_INLINE.get(frame.msgtype)
    if will_not_block is None or not will_not_block(conn, frame.body):
        return False
    dispatch(conn, frame)
    return True


def _dispatch(conn, frame: protocol.Frame) -> None:
    msgtype, body = frame.msgtype, frame.body
    entry = registry.TCP_HANDLERS.get(msgtype)
    try:
        if entry is None:
            raise ImError("unknown_type", f"unknown msgtype {msgtype}")
        handler, needs_auth = entry
        if needs_auth and conn.uid is None:
            raise ImError("not_authenticated", "log in first")
        if "msgid" in body and not msgid_of(body) and msgtype not in FREE_MSGID:
            raise ImError("bad_request", "msgid: 1-50 characters")
        result = handler(conn, body)
    except ImError as err:
        conn.error(msgtype, msgid_of(body), err.code, err.text)
        if err.code in COUNTED_AS_BAD:
            conn.count_bad_frame()
        return
    except Exception:
        log.exception("handler for msgtype %s failed (%s)", msgtype, conn)
        conn.error(msgtype, msgid_of(body), "internal", "internal error")
        return
    conn.bad_frames = 0
    if result is not None:
        conn.ack(msgtype, msgid_of(body), **result)
