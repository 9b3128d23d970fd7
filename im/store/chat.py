"""SQL of chat: stream counters, 1:1 and group messages, receipts (PROTOCOL.md §1.3, §1.4, §1.6).

Every function works on a whole batch with one statement (arrays through `unnest`), so the
writer's cost per transaction does not grow in statements with the number of messages.
Counter rows are locked in sorted order so that concurrent writers cannot deadlock.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import psycopg2.errors

from im import db


def texts(values: Iterable[str | None]) -> str:
    """A text[] literal (None → NULL), passed as one parameter: psycopg2 adapts a Python list
    element by element (~2 µs each), which dominated the writer's CPU."""
    values = list(values)
    if not values:
        return "{}"
    if None not in values:  # the common case: nothing to escape (only the separators' quotes)
        joined = '","'.join(values)
        if joined.count('"') == 2 * (len(values) - 1) and "\\" not in joined:
            return '{"' + joined + '"}'
    return "{" + ",".join("NULL" if v is None else
                          '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def ints(values: Iterable[int]) -> str:
    """A bigint[] literal, passed as one parameter."""
    return "{" + ",".join(map(str, values)) + "}"


# --- the chat writer's transaction: one statement --------------------------------------
#
# The function im_chat_store (im/schema.sql) locks the counters, advances them and inserts
# the batch at the positions the caller numbered within it; called as one prepared statement
# on an autocommit connection, it is one round trip and its own transaction (committed before
# the answer arrives).

class Conflict(Exception):
    """A (sender, msgid) of the batch is stored already (a client's retry, or another writer
    meanwhile): the transaction was rolled back; look them up and write the rest again."""


@dataclass(slots=True)
class Batch:
    """A batch numbered within itself: each counter's count of new positions, each message's
    offset from its counter's value before the batch."""
    mailboxes: dict[str, list[int]] = field(default_factory=dict)  # uid → [count, given offset]
    direct: list[tuple] = field(default_factory=list)  # (msgid, msg, msgfrom, msgto, send_time,
    #                                                     from_res, to_res, from_off, to_off)
    groups: dict[str, int] = field(default_factory=dict)  # gid → count
    online: list[tuple[str, str]] = field(default_factory=list)  # (gid, uid): given the new last
    group: list[tuple] = field(default_factory=list)  # (msgid, msg, msgfrom, gid, send_time,
    #                                                    from_res, off)


STATEMENTS = {
    "im_chat_store": """(timestamptz, text[], bigint[], bigint[], text[], text[], text[], text[],
                         text[], text[], text[], bigint[], bigint[], text[], bigint[], text[],
                         text[], text[], text[], text[], text[], text[], text[], bigint[]) AS
        SELECT * FROM im_chat_store($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                    $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)""",
    # the (msgfrom, msgid) among the given keys stored already (1:1 'd', group 'g')
    "im_chat_stored": """(text[], text[], text[], text[]) AS
        SELECT 'd', k.msgfrom, k.msgid, m.from_seq, m.indb_time
        FROM unnest($1, $2) AS k(msgfrom, msgid), LATERAL (
            SELECT from_seq, indb_time FROM tp_im_message
            WHERE msgfrom = k.msgfrom AND msgid = k.msgid) m
        UNION ALL SELECT 'g', k.msgfrom, k.msgid, m.seq, m.indb_time
        FROM unnest($3, $4) AS k(msgfrom, msgid), LATERAL (
            SELECT seq, indb_time FROM tp_im_message_group
            WHERE msgfrom = k.msgfrom AND msgid = k.msgid) m""",
}


def store_batch(cur, stamp: datetime, batch: Batch) -> tuple[dict[str, int], dict[str, int]]:
    """Store `batch` and commit, in one round trip; returns each mailbox's and each live
    group's last position before it (a group not returned does not exist: its messages were
    not stored). Raises Conflict (rolled back) when a (sender, msgid) is stored already."""
    uids, gids = sorted(batch.mailboxes), sorted(batch.groups)
    direct = list(zip(*batch.direct)) or [()] * 9
    online = list(zip(*batch.online)) or [()] * 2
    group = list(zip(*batch.group)) or [()] * 7
    try:
        db.execute(cur, STATEMENTS, "im_chat_store", (
            stamp, texts(uids), ints(batch.mailboxes[u][0] for u in uids),
            ints(batch.mailboxes[u][1] for u in uids), *map(texts, direct[:7]),
            *map(ints, direct[7:]), texts(gids), ints(batch.groups[g] for g in gids),
            *map(texts, online), *map(texts, group[:6]), ints(group[6])))
    except psycopg2.errors.UniqueViolation:
        raise Conflict() from None
    bases: dict[str, dict[str, int]] = {"m": {}, "g": {}}
    for kind, key, base in cur.fetchall():
        bases[kind][key] = base
    return bases["m"], bases["g"]


def stored(cur, direct: list[tuple[str, str]], group: list[tuple[str, str]]
           ) -> tuple[dict[tuple[str, str], tuple], dict[tuple[str, str], tuple]]:
    """Which of the (msgfrom, msgid) keys of 1:1 and group messages are stored:
    key → (from_seq or seq, indb_time)."""
    db.execute(cur, STATEMENTS, "im_chat_stored", (
        texts(k[0] for k in direct), texts(k[1] for k in direct),
        texts(k[0] for k in group), texts(k[1] for k in group)))
    found: dict[str, dict] = {"d": {}, "g": {}}
    for kind, sender, msgid, seq, stamp in cur.fetchall():
        found[kind][(sender, msgid)] = (seq, stamp)
    return found["d"], found["g"]


# --- receipts --------------------------------------------------------------------------

RECEIPT_TABLES = {"roster": "tp_im_roster_req", "group": "tp_im_group_req"}


def mark_received(cur, kind: str, rows: list[tuple[str, str, str | None]]) -> int:
    """Set RECEIVED = 1 on the `kind` rows addressed to `msgto` with `msgid` (from `msgfrom`
    when it is not None): rows of (msgto, msgid, msgfrom)."""
    if kind == "message":
        return _mark_messages(cur, rows)
    cur.execute(f"""UPDATE {RECEIPT_TABLES[kind]} t SET received = 1
                    FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(msgto, msgid, msgfrom)
                    WHERE t.msgto = v.msgto AND t.msgid = v.msgid
                      AND (v.msgfrom IS NULL OR t.msgfrom = v.msgfrom) AND t.received = 0""",
                (texts(r[0] for r in rows), texts(r[1] for r in rows), texts(r[2] for r in rows)))
    return cur.rowcount


def _mark_messages(cur, rows: list[tuple[str, str, str | None]]) -> int:
    """1:1 receipts: by primary key when the sender is named, else by (msgto, msgid) among
    the recipient's messages after its im_received.received_seq."""
    named = [r for r in rows if r[2] is not None]
    unnamed = [r for r in rows if r[2] is None]
    count = 0
    if named:
        cur.execute("""UPDATE tp_im_message t SET received = 1
                       FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(msgto, msgid, msgfrom)
                       WHERE t.msgfrom = v.msgfrom AND t.msgid = v.msgid AND t.msgto = v.msgto
                         AND t.received = 0""",
                    (texts(r[0] for r in named), texts(r[1] for r in named),
                     texts(r[2] for r in named)))
        count += cur.rowcount
    if unnamed:
        cur.execute("""UPDATE tp_im_message t SET received = 1
                       FROM unnest(%s::text[], %s::text[]) AS v(msgto, msgid)
                       LEFT JOIN im_received r ON r.uid = v.msgto
                       WHERE t.msgto = v.msgto AND t.to_seq > COALESCE(r.received_seq, 0)
                         AND t.msgid = v.msgid AND t.received = 0""",
                    (texts(r[0] for r in unnamed), texts(r[1] for r in unnamed)))
        count += cur.rowcount
    return count


def mark_received_upto(cur, rows: list[tuple[str, int]]) -> int:
    """Set RECEIVED = 1 on the 1:1 messages to `msgto` up to mailbox position `upto`, never
    past the mailbox's given_seq (§6.12), and raise im_received to match: rows of (msgto, upto).

    The bound is read in the marking statement's snapshot, which holds every message up to
    given_seq, so none is left unmarked below the new received_seq. im_received rows are
    locked last and in uid order (after any message row), so receipt writers cannot deadlock."""
    cur.execute("""WITH b AS (
                       SELECT v.uid, COALESCE(r.received_seq, 0) AS lo,
                              LEAST(v.upto, m.given_seq) AS hi
                       FROM unnest(%s::text[], %s::bigint[]) AS v(uid, upto)
                       JOIN im_mailbox m ON m.uid = v.uid
                       LEFT JOIN im_received r ON r.uid = v.uid),
                   marked AS (
                       UPDATE tp_im_message t SET received = 1 FROM b
                       WHERE t.msgto = b.uid AND t.to_seq > b.lo AND t.to_seq <= b.hi
                         AND t.received = 0 RETURNING 1)
                   SELECT b.uid, b.hi, (SELECT count(*) FROM marked) FROM b
                   WHERE b.hi > b.lo ORDER BY b.uid""",
                (texts(r[0] for r in rows), ints(r[1] for r in rows)))
    raised = cur.fetchall()
    if not raised:
        return 0
    cur.execute("""INSERT INTO im_received (uid, received_seq)
                   SELECT * FROM unnest(%s::text[], %s::bigint[])
                   ON CONFLICT (uid) DO UPDATE
                   SET received_seq = GREATEST(im_received.received_seq, excluded.received_seq)""",
                (texts(r[0] for r in raised), ints(r[1] for r in raised)))
    return raised[0][2]
