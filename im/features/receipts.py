"""Client receipts (PROTOCOL.md §1.4): IM_MESSAGE_ACK frames from a client mark 1:1 messages,
friend requests and group invitations addressed to it as RECEIVED.

Receipts get no ACK and unknown ids are ignored. They are queued and written by one writer
greenlet per process, a whole batch per transaction, a batch at most every PAUSE_S; a batch
lost to a database failure is only logged (the rows stay unreceived, so the client is shown
them again).
"""

import logging
from collections import defaultdict

from im import protocol, runtime
from im.batcher import Batcher
from im.errors import ImError
from im.registry import never_waits, tcp_handler
from im.store import chat as store

log = logging.getLogger("im.receipts")

MAX_BATCH = 5000
# Nobody waits for a receipt: a batch taken 20 ms after the last one holds more of them, and a
# statement's fixed cost dominates small batches (chat at 1,000 msg/s with a receipt per
# message: PostgreSQL 630 -> 460 us of CPU per message).
PAUSE_S = 0.02
KINDS = {str(protocol.IM_MESSAGE): "message", str(protocol.IM_ROSTER_ADD_REQ): "roster",
         str(protocol.IM_CHATROOM_INVENT): "group"}
UPTO = "upto"


def _string(body: dict, field: str, required: bool) -> str | None:
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 50 or "\x00" in value:
        raise ImError("bad_request", f"{field}: a string of 1-50 characters")
    return value


def _upto(value) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 62:
        raise ImError("bad_request", "upto: a mailbox position")
    return value


def parse(body: dict, uid: str) -> tuple:
    """A receipt as (kind, addressee, msgid, from) or (UPTO, addressee, position)."""
    kind = KINDS.get(str(body.get("type")))
    if kind is None:
        raise ImError("bad_request", "type: 196609, 200705 or 200709")
    if kind == "message" and body.get("upto") is not None:
        return UPTO, uid, _upto(body["upto"])
    return kind, uid, _string(body, "msgid", True), _string(body, "from", False)


def _write(batch: list[tuple]) -> None:
    by_kind: dict[str, list] = defaultdict(list)
    upto: dict[str, int] = {}
    for receipt in batch:
        if receipt[0] == UPTO:
            upto[receipt[1]] = max(upto.get(receipt[1], 0), receipt[2])
        else:
            by_kind[receipt[0]].append(receipt[1:])
    try:
        with runtime.writer_db.transaction() as cur:
            for kind, rows in by_kind.items():
                store.mark_received(cur, kind, rows)
            if upto:
                store.mark_received_upto(cur, sorted(upto.items()))
    except ImError as err:
        log.warning("%d receipts not written: %s", len(batch), err.code)


_writer = Batcher("receipts", _write, MAX_BATCH, pause=PAUSE_S)
runtime.on_stop(lambda: _writer.drain(runtime.cfg.shutdown_timeout_s if runtime.cfg else 10.0))


@tcp_handler(protocol.IM_MESSAGE_ACK, inline=never_waits)
def tcp_receipt(conn, body: dict) -> None:
    """Queued for the writer (from the read callback: a client may receipt each message)."""
    _writer.submit(parse(body, conn.uid))
    return None
