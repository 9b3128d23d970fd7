"""Chat messages, 1:1 and group (PROTOCOL.md §1.3, §1.4, §1.6, §6.3, §6.11, §6.12).

The hot path: the IM_MESSAGE handler validates against cached lookups and queues the message
for this process's single writer greenlet, which stores everything queued in one transaction
(group commit), then answers and delivers in the order the positions were taken. The stream
counter rows are locked in the storing transaction, so positions are gapless and visible in
commit order even with several writer processes. A retry with a known (sender, msgid) gets the
original's ACK and is neither stored nor delivered again.

A connection keeps reading frames while its messages wait for their batch (up to WINDOW of
them); its success ACKs still leave in the order of its messages (an error ACK for a frame
refused before queueing may overtake them).
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gevent.event import AsyncResult
from gevent.lock import BoundedSemaphore

from im import metrics, protocol, runtime
from im.batcher import Batcher
from im.errors import ImError
from im.features import membership
from im.registry import tcp_handler
from im.store import accounts as accounts_store
from im.store import chat as store
from im.timefmt import fmt, now

log = logging.getLogger("im.chat")

WINDOW = 256            # messages of one connection waiting for their batch
MAX_BATCH = 2000        # messages stored in one transaction
MAX_ATTEMPTS = 3        # a batch that lost a race on a (sender, msgid) is written again
MAX_RES = 100
MAX_SEND_TIME = 30
DIRECT, GROUP = "0", "1"
ACK_TYPE = str(protocol.IM_MESSAGE)

Reply = Callable[[object], None]  # called with (seq, time, delivered) or an ImError


@dataclass(slots=True, eq=False)
class Message:
    kind: str            # DIRECT or GROUP
    sender: str
    sender_res: str
    to: str              # uid or gid
    to_res: str
    body: str
    msgid: str
    send_time: str | None
    conn: object | None  # the sending connection: excluded from delivery
    reply: Reply
    live: bool = True    # False: the caller delivers it (e.g. the broadcast, via an event)
    # set by the writer
    seq: int = 0         # from_seq (1:1) or the group's number
    to_seq: int = 0
    time: str = ""       # the stored time, as on the wire
    new: bool = False
    error: ImError | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.kind, self.sender, self.msgid


# --- validation ------------------------------------------------------------------------

def _text(body: dict, field: str, max_len: int, required: bool = True,
          numeric: bool = False) -> str:
    """A required (or optional: "") non-empty string field; `numeric` also takes integers."""
    value = body.get(field)
    if value is None and not required:
        return ""
    if numeric and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or value == "":
        raise ImError("bad_request", f"{field}: required string")
    if len(value) > max_len or "\x00" in value:
        raise ImError("bad_request", f"{field}: at most {max_len} characters, no NUL")
    return value


def _kind(body: dict) -> str:
    kind = body.get("type")
    if kind in ("0", 0) and not isinstance(kind, bool):
        return DIRECT
    if kind in ("1", 1) and not isinstance(kind, bool):
        return GROUP
    raise ImError("bad_request", 'type: must be "0" (1:1) or "1" (group)')


def _body(value) -> str:
    if not isinstance(value, str):
        raise ImError("bad_request", "body: required string")
    if len(value) > runtime.cfg.max_body_chars:
        raise ImError("body_too_long", f"body: at most {runtime.cfg.max_body_chars} characters")
    if "\x00" in value:
        raise ImError("bad_request", "body: NUL character")
    return value


def check_recipient(sender: str, kind: str, to: str) -> None:
    """May `sender` write to `to`? Cached lookups only, in the common case."""
    if kind == DIRECT:
        if not membership.user_exists(to):
            raise ImError("no_such_user", f"no user {to}")
        if runtime.cfg.require_friendship and to != sender \
                and not membership.are_friends(sender, to):
            raise ImError("not_friend", f"{to} is not your friend")
        return
    members = membership.members(to)
    if members is None:
        raise ImError("no_such_group", f"no group {to}")
    if sender not in members:
        raise ImError("not_member", f"not a member of group {to}")


def parse(body: dict, sender: str, sender_res: str) -> Message:
    """A validated IM_MESSAGE request (the reply and connection are filled in later)."""
    msgid = _text(body, "msgid", 50)
    to = _text(body, "to", 200, numeric=True)
    kind = _kind(body)
    text = _body(body.get("body"))
    to_res = _text(body, "to_res", MAX_RES, required=False)
    send_time = body.get("time")
    send_time = str(send_time).replace("\x00", "")[:MAX_SEND_TIME] if send_time is not None else None
    check_recipient(sender, kind, to)
    return Message(kind, sender, sender_res, to, to_res, text, msgid, send_time, None, _no_reply)


def _no_reply(_outcome) -> None:
    pass


# --- the writer ------------------------------------------------------------------------

def _write(batch: list[Message]) -> None:
    leaders: dict[tuple, Message] = {}
    for m in batch:
        leaders.setdefault(m.key, m)
    try:
        _store(list(leaders.values()))
    except ImError as err:
        log.warning("chat batch of %d not stored: %s", len(batch), err.code)
        for m in batch:
            m.reply(err)
        return
    except Exception:
        log.exception("chat batch of %d failed", len(batch))
        for m in batch:
            m.reply(ImError("internal", "internal error"))
        return
    for m in batch:
        leader = leaders[m.key]
        if leader.error is not None:
            m.reply(leader.error)
            continue
        delivered = _deliver_safely(m) if m is leader and m.new and m.live else 0
        m.reply((leader.seq, leader.time, delivered))


def _store(messages: list[Message]) -> None:
    """Store the batch. The first attempt assumes every message is new (a duplicate fails the
    insert and rolls back); the next ones look the retries up first."""
    direct = [m for m in messages if m.kind == DIRECT]
    group = [m for m in messages if m.kind == GROUP]
    found: tuple[dict, dict] = ({}, {})
    for attempt in range(MAX_ATTEMPTS):
        try:
            with runtime.writer_db.autocommit() as cur:
                if attempt:
                    found = store.stored(cur, [(m.sender, m.msgid) for m in direct],
                                         [(m.sender, m.msgid) for m in group])
                stored_direct, stored_group = _store_batch(cur, direct, group, now(), found)
            metrics.STORED_DIRECT.inc(stored_direct)
            metrics.STORED_GROUP.inc(stored_group)
            return
        except store.Conflict:
            log.debug("chat batch holds a stored msgid, attempt %d", attempt + 1)
    raise ImError("unavailable", "could not store the messages, retry")


def _store_batch(cur, direct: list[Message], group: list[Message], stamp: datetime,
                 found: tuple[dict, dict]) -> tuple[int, int]:
    """One transaction in one round trip (store.store_batch): the new messages are numbered
    within the batch here, the counters' values added once stored. `found`: the 1:1 and the
    group messages stored already (key → (seq, time)). Returns how many of each were new."""
    batch = store.Batch()
    new_direct = _number_direct(direct, found[0], batch)
    new_group = _number_group(group, found[1], batch)
    mailboxes, groups = store.store_batch(cur, stamp, batch)
    stamp_text = fmt(stamp)
    for m in new_direct:
        m.seq += mailboxes[m.sender]
        m.to_seq += mailboxes[m.to]
        m.time, m.new = stamp_text, True
    for m in new_group:
        base = groups.get(m.to)
        if base is None:
            m.error = ImError("no_such_group", f"no group {m.to}")
            continue
        m.seq += base
        m.time, m.new = stamp_text, True
    return len(new_direct), sum(m.new for m in new_group)


def _stored_before(m: Message, found: dict) -> bool:
    """Reset m for this attempt; if it is among the `found` stored ones (a retry), it takes its
    stored position and time."""
    m.error, m.new = None, False
    known = found.get((m.sender, m.msgid))
    if known is None:
        return False
    m.seq, m.time = known[0], fmt(known[1])
    return True


def _number_direct(messages: list[Message], found: dict, batch: store.Batch) -> list[Message]:
    """Offsets within the batch for the messages not stored yet (returned), and the given
    offset each mailbox reaches (§6.12); the stored ones take their original positions."""
    counts = batch.mailboxes
    new = []
    for m in messages:
        if _stored_before(m, found):
            continue
        sender = counts.setdefault(m.sender, [0, 0])
        sender[0] += 1
        m.seq = m.to_seq = sender[1] = sender[0]  # the sender is given from_seq by the ACK
        recipient = sender
        if m.to != m.sender:
            recipient = counts.setdefault(m.to, [0, 0])
            recipient[0] += 1
            m.to_seq = recipient[0]
        if m.live and _reachable(m.to, m.to_res):
            recipient[1] = max(recipient[1], m.to_seq)
        batch.direct.append((m.msgid, m.body, m.sender, m.to, m.send_time, m.sender_res,
                             m.to_res, m.seq, m.to_seq))
        new.append(m)
    return new


def _number_group(messages: list[Message], found: dict, batch: store.Batch) -> list[Message]:
    """Offsets within the batch for the group messages not stored yet (returned), and the
    online members of their groups; the stored ones take their original numbers."""
    counts = batch.groups
    new = []
    for m in messages:
        if _stored_before(m, found):
            continue
        counts[m.to] = m.seq = counts.get(m.to, 0) + 1
        batch.group.append((m.msgid, m.body, m.sender, m.to, m.send_time, m.sender_res, m.seq))
        new.append(m)
    batch.online = [(gid, uid) for gid in sorted(counts) for uid in membership.members(gid) or ()
                    if runtime.router.is_online(uid)]
    return new


def _reachable(uid: str, res: str) -> bool:
    """Will a delivery to uid (only `res` if given) reach a logged-in connection?"""
    if not res:
        return runtime.router.is_online(uid)
    return any(c.res == res for c in runtime.router.connections(uid))


# --- delivery --------------------------------------------------------------------------

def _frame_body(m: Message, seq: int) -> dict:
    return {"msgid": m.msgid, "from": m.sender, "from_res": m.sender_res, "to": m.to,
            "to_res": m.to_res, "time": m.time, "type": m.kind, "body": m.body, "seq": seq}


def recipient_frame(row: dict) -> bytes:
    """The IM_MESSAGE frame of a stored 1:1 message (a tp_im_message row), as its recipient
    receives it live."""
    m = Message(DIRECT, row["msgfrom"], row["from_res"], row["msgto"], row["to_res"], row["msg"],
                row["msgid"], None, None, _no_reply, time=fmt(row["indb_time"]))
    return protocol.encode(protocol.IM_MESSAGE, _frame_body(m, row["to_seq"]))


def _deliver_safely(m: Message) -> int:
    """Deliver, but never keep the message's sender from its ACK: the message is stored."""
    try:
        return _deliver(m)
    except Exception:
        log.exception("delivery of a stored message failed")
        return 0


def _deliver(m: Message) -> int:
    """Send a newly stored message to its readers; returns the recipient connections reached."""
    router = runtime.router
    if m.kind == GROUP:
        members = membership.members(m.to) or ()
        frame = protocol.encode(protocol.IM_MESSAGE, _frame_body(m, m.seq))
        return router.deliver_many(members, frame, exclude=m.conn)
    reached = 0
    if router.is_online(m.to):
        frame = protocol.encode(protocol.IM_MESSAGE, _frame_body(m, m.to_seq))
        reached = router.deliver(m.to, frame, res=m.to_res or None, exclude=m.conn)
    if m.to != m.sender and _has_others(m.sender, m.conn):
        carbon = protocol.encode(protocol.IM_NOTIFY_MESSAGE, _frame_body(m, m.seq))
        router.deliver(m.sender, carbon, exclude=m.conn)
    return reached


def _has_others(uid: str, conn) -> bool:
    """Has uid a logged-in connection besides `conn`?"""
    return runtime.router.is_online(uid) and (conn is None or any(
        c is not conn for c in runtime.router.connections(uid)))


_writer = Batcher("chat", _write, MAX_BATCH)
runtime.on_stop(lambda: _writer.drain(runtime.cfg.shutdown_timeout_s if runtime.cfg else 10.0))


# --- entry points ----------------------------------------------------------------------

def _queues_at_once(conn, body: dict) -> bool:
    """Will `tcp_message` queue this frame without waiting (its connection's window has room,
    the recipient checks hit the caches)? Then it runs from the read callback, in the hub:
    a greenlet per frame costs more than the handler itself."""
    window = conn.state.get("chat_window")
    if window is not None and window.locked():
        return False
    to = body.get("to")
    if not isinstance(to, str):
        return False
    try:
        kind = _kind(body)
    except ImError:  # refused in a greenlet, as any frame this cannot vouch for
        return False
    return membership.cached(conn.uid, to, kind == GROUP)


@tcp_handler(protocol.IM_MESSAGE, inline=_queues_at_once)
def tcp_message(conn, body: dict) -> None:
    """Queue the message; its ACK is sent by the writer after the commit."""
    started = time.perf_counter()
    message = parse(body, conn.uid, conn.res)
    window = conn.state.get("chat_window")
    if window is None:
        window = conn.state["chat_window"] = BoundedSemaphore(WINDOW)
    window.acquire()
    message.conn = conn
    msgid = message.msgid  # not `message`: a closure over it would make a reference cycle
    message.reply = lambda outcome: _reply_tcp(conn, window, msgid, outcome, started)
    try:
        _writer.submit(message)
    except ImError:
        window.release()
        raise
    return None


def _reply_tcp(conn, window: BoundedSemaphore, msgid: str, outcome, started: float) -> None:
    window.release()
    metrics.ACK_LATENCY.observe(time.perf_counter() - started)
    if isinstance(outcome, ImError):
        conn.error(protocol.IM_MESSAGE, msgid, outcome.code, outcome.text)
    else:
        conn.send(protocol.IM_MESSAGE_ACK, {"type": ACK_TYPE, "msgid": msgid,
                                            "time": outcome[1], "seq": outcome[0]})


def send_many(sender: str, sender_res: str, body: str, targets: list[tuple[str, str]],
              live: bool = True) -> list[tuple[int, str, int] | ImError]:
    """Store and deliver a 1:1 message from `sender` to each (uid, msgid) of `targets`,
    without a TCP connection (e.g. the admin broadcast from `system`); all go through the
    writer together. Returns, per target, (sender's from_seq, stored time as on the wire,
    number of the recipient's connections reached) or the ImError (no_such_user,
    body_too_long, unavailable, ...). Idempotent per (sender, msgid) like IM_MESSAGE.
    `live=False`: store only (nothing delivered, given_seq untouched); the caller delivers."""
    text = _body(body)
    with runtime.db.transaction() as cur:
        known = accounts_store.existing_uids(cur, [to for to, _ in targets])
    waits: list[AsyncResult | ImError] = []
    for to, msgid in targets:
        if to not in known:
            waits.append(ImError("no_such_user", f"no user {to}"))
            continue
        done = AsyncResult()
        _writer.submit(Message(DIRECT, sender, sender_res, to, "", text, msgid, None, None,
                               done.set, live))
        waits.append(done)
    return [w if isinstance(w, ImError) else w.get() for w in waits]


def send_direct(sender: str, sender_res: str, to: str, body: str,
                msgid: str) -> tuple[int, str, int]:
    """send_direct(sender, sender_res, to, body, msgid) -> (seq, time, delivered): one 1:1
    message as in `send_many`; raises the ImError instead of returning it."""
    outcome = send_many(sender, sender_res, body, [(to, msgid)])[0]
    if isinstance(outcome, ImError):
        raise outcome
    return outcome
