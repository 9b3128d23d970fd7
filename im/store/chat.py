"""SQL of chat: stream counters, 1:1 and group messages, receipts (PROTOCOL.md §1.3, §1.4, §1.6).

Every function works on a whole batch with one statement (arrays through `unnest`), so the
writer's cost per transaction does not grow in statements with the number of messages.
Counter rows are locked in sorted order so that concurrent writers cannot deadlock.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import psycopg2.errors

from im import db

Key = tuple[str, str]  # (msgfrom, msgid)


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


# --- the chat writer's transaction: two round trips ------------------------------------
#
# `begin_batch` opens the transaction and locks the counters; the caller takes positions;
# `commit_batch` writes everything and commits in one string. Both run on an autocommit
# connection (no BEGIN/COMMIT round trips of the driver's own) with prepared statements (no
# planning per batch): 2 round trips per batch instead of 6.

class Conflict(Exception):
    """A (sender, msgid) of the batch is stored already (a client's retry, or another writer
    meanwhile): the transaction was rolled back; write the batch again, checking for them."""


@dataclass(slots=True)
class Locked:
    mailboxes: dict[str, int]                    # uid → last_seq, locked
    groups: dict[str, int]                       # live gid → last_seq, locked
    direct: dict[Key, tuple[int, datetime]]      # stored 1:1 messages: key → (from_seq, indb_time)
    group: dict[Key, tuple[int, datetime]]       # stored group messages: key → (seq, indb_time)


STATEMENTS = {
    # counters locked in sorted order (writers cannot deadlock), then the stored ones among
    # the given keys (LATERAL: one primary-key probe each, whatever the generic plan)
    "im_chat_lock": """(text[], text[], text[], text[], text[], text[]) AS
        WITH mb AS (SELECT uid, last_seq FROM im_mailbox WHERE uid = ANY($1)
                    ORDER BY uid FOR UPDATE),
             gr AS (SELECT gid, last_seq FROM tp_im_group WHERE gid = ANY($2) AND NOT dismissed
                    ORDER BY gid FOR UPDATE)
        SELECT 'm', uid, NULL, last_seq, NULL::timestamptz FROM mb
        UNION ALL SELECT 'g', gid, NULL, last_seq, NULL FROM gr
        UNION ALL SELECT 'd', k.msgfrom, k.msgid, m.from_seq, m.indb_time
                  FROM unnest($3, $4) AS k(msgfrom, msgid), LATERAL (
                      SELECT from_seq, indb_time FROM tp_im_message
                      WHERE msgfrom = k.msgfrom AND msgid = k.msgid) m
        UNION ALL SELECT 'e', k.msgfrom, k.msgid, m.seq, m.indb_time
                  FROM unnest($5, $6) AS k(msgfrom, msgid), LATERAL (
                      SELECT seq, indb_time FROM tp_im_message_group
                      WHERE msgfrom = k.msgfrom AND msgid = k.msgid) m""",
    "im_chat_insert": """(timestamptz, text[], text[], text[], text[], text[], text[], text[],
                          bigint[], bigint[]) AS
        INSERT INTO tp_im_message (msgid, msg, msgfrom, msgto, send_time, from_res, to_res,
                                   from_seq, to_seq, indb_time)
        SELECT *, $1 FROM unnest($2, $3, $4, $5, $6, $7, $8, $9, $10)""",
    "im_chat_mailboxes": """(text[], bigint[], bigint[]) AS
        UPDATE im_mailbox m
        SET last_seq = v.last_seq, given_seq = GREATEST(m.given_seq, v.given_seq)
        FROM unnest($1, $2, $3) AS v(uid, last_seq, given_seq) WHERE m.uid = v.uid""",
    "im_chat_group_insert": """(timestamptz, text[], text[], text[], text[], text[], text[],
                                bigint[]) AS
        INSERT INTO tp_im_message_group (msgid, msg, msgfrom, gid, send_time, from_res, seq,
                                         indb_time)
        SELECT *, $1 FROM unnest($2, $3, $4, $5, $6, $7, $8)""",
    "im_chat_groups": """(text[], bigint[]) AS
        UPDATE tp_im_group g SET last_seq = v.last_seq
        FROM unnest($1, $2) AS v(gid, last_seq) WHERE g.gid = v.gid""",
    "im_chat_group_given": """(text[], text[], bigint[]) AS
        UPDATE tp_im_group_peer p SET given_seq = v.seq
        FROM unnest($1, $2, $3) AS v(gid, uid, seq)
        WHERE p.gid = v.gid AND p.userid = v.uid AND p.given_seq < v.seq""",
}


def begin_batch(cur, uids: set[str], gids: set[str], direct: list[Key],
                group: list[Key]) -> Locked:
    """BEGIN; lock the mailbox counters of `uids` (created if missing) and the live groups
    among `gids`; find which of the `direct` and `group` keys are already stored."""
    db.prepare(cur, STATEMENTS)
    cur.execute(b"BEGIN; " + db.call(cur, "im_chat_lock", (
        texts(sorted(uids)), texts(sorted(gids)), texts(k[0] for k in direct),
        texts(k[1] for k in direct), texts(k[0] for k in group), texts(k[1] for k in group))))
    locked = Locked({}, {}, {}, {})
    into = {"m": locked.mailboxes, "g": locked.groups, "d": locked.direct, "e": locked.group}
    for tag, key, msgid, seq, stamp in cur.fetchall():
        if tag in "mg":
            into[tag][key] = seq
        else:
            into[tag][(key, msgid)] = (seq, stamp)
    missing = sorted(uids - locked.mailboxes.keys())
    if missing:  # e.g. the `system` sender, which has no account: rare, two more round trips
        cur.execute("INSERT INTO im_mailbox (uid) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                    (texts(missing),))
        cur.execute("SELECT uid, last_seq FROM im_mailbox WHERE uid = ANY(%s::text[]) "
                    "ORDER BY uid FOR UPDATE", (texts(missing),))
        locked.mailboxes.update(cur.fetchall())
    return locked


def commit_batch(cur, stamp: datetime, messages: list[tuple], mailboxes: dict[str, int],
                 given: dict[str, int], group_messages: list[tuple], groups: dict[str, int],
                 group_given: list[tuple[str, str, int]]) -> None:
    """Write the batch and COMMIT, in one round trip:
    - `messages`: 1:1 rows of (msgid, msg, msgfrom, msgto, send_time, from_res, to_res,
      from_seq, to_seq) stamped `stamp`; `mailboxes`: uid → new last_seq; `given`: uid → a
      given_seq to raise to;
    - `group_messages`: rows of (msgid, msg, msgfrom, gid, send_time, from_res, seq);
      `groups`: gid → new last_seq; `group_given`: (gid, uid, seq) to raise given_seq to.
    Raises Conflict (rolled back) when a (sender, msgid) is stored already."""
    parts = []
    if messages:
        cols = list(zip(*messages))
        parts.append(db.call(cur, "im_chat_insert", (stamp, *map(texts, cols[:7]), *map(ints, cols[7:]))))
        uids = sorted(mailboxes)
        parts.append(db.call(cur, "im_chat_mailboxes", (
            texts(uids), ints(mailboxes[u] for u in uids), ints(given.get(u, 0) for u in uids))))
    if group_messages:
        cols = list(zip(*group_messages))
        parts.append(db.call(cur, "im_chat_group_insert", (stamp, *map(texts, cols[:6]), ints(cols[6]))))
        gids = sorted(groups)
        parts.append(db.call(cur, "im_chat_groups", (texts(gids), ints(groups[g] for g in gids))))
    if group_given:
        rows = sorted(group_given)
        parts.append(db.call(cur, "im_chat_group_given", (
            texts(r[0] for r in rows), texts(r[1] for r in rows), ints(r[2] for r in rows))))
    parts.append(b"COMMIT")
    try:
        cur.execute(b";".join(parts))
    except psycopg2.errors.UniqueViolation:
        raise Conflict() from None


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
