"""SQL of chat: stream counters, 1:1 and group messages, receipts (PROTOCOL.md §1.3, §1.4, §1.6).

Every function works on a whole batch with one statement (arrays through `unnest`), so the
writer's cost per transaction does not grow in statements with the number of messages.
Counter rows are locked in sorted order so that concurrent writers cannot deadlock.
"""

from collections.abc import Iterable
from datetime import datetime

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


# --- mailbox streams -------------------------------------------------------------------

def lock_mailboxes(cur, uids: list[str]) -> dict[str, int]:
    """Lock the mailbox counters of `uids` (created if missing) in uid order; uid → last_seq."""
    uids = sorted(uids)
    last = _lock_mailbox_rows(cur, uids)
    missing = [u for u in uids if u not in last]
    if missing:  # e.g. the `system` sender, which has no account
        cur.execute("INSERT INTO im_mailbox (uid) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                    (texts(missing),))
        last.update(_lock_mailbox_rows(cur, missing))
    return last


def _lock_mailbox_rows(cur, uids: list[str]) -> dict[str, int]:
    cur.execute("SELECT uid, last_seq FROM im_mailbox WHERE uid = ANY(%s::text[]) "
                "ORDER BY uid FOR UPDATE", (texts(uids),))
    return dict(cur.fetchall())


def update_mailboxes(cur, last: dict[str, int], given: dict[str, int]) -> None:
    """Set last_seq of the locked mailboxes; raise given_seq to `given` where it is higher."""
    uids = sorted(last)
    cur.execute("""UPDATE im_mailbox m
                   SET last_seq = v.last_seq, given_seq = GREATEST(m.given_seq, v.given_seq)
                   FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS v(uid, last_seq, given_seq)
                   WHERE m.uid = v.uid""",
                (texts(uids), ints(last[u] for u in uids), ints(given.get(u, 0) for u in uids)))


# --- 1:1 messages ----------------------------------------------------------------------

def _existing(cur, table: str, seq: str, keys: list[Key]) -> dict[Key, tuple[int, datetime]]:
    """Already stored rows of `table` among `keys`: key → (the `seq` column, indb_time)."""
    cur.execute(f"""SELECT m.msgfrom, m.msgid, m.{seq}, m.indb_time
                    FROM {table} m
                    JOIN unnest(%s::text[], %s::text[]) AS k(msgfrom, msgid)
                      ON m.msgfrom = k.msgfrom AND m.msgid = k.msgid""",
                (texts(k[0] for k in keys), texts(k[1] for k in keys)))
    return {(r[0], r[1]): (r[2], r[3]) for r in cur.fetchall()}


def existing_messages(cur, keys: list[Key]) -> dict[Key, tuple[int, datetime]]:
    """Already stored 1:1 messages among `keys`: key → (from_seq, indb_time)."""
    return _existing(cur, "tp_im_message", "from_seq", keys)


def insert_messages(cur, rows: list[tuple], stamp: datetime) -> int:
    """Insert rows of (msgid, msg, msgfrom, msgto, send_time, from_res, to_res, from_seq,
    to_seq) stamped `stamp`; returns how many were new."""
    cols = list(zip(*rows))
    cur.execute("""INSERT INTO tp_im_message (msgid, msg, msgfrom, msgto, send_time, from_res,
                                              to_res, from_seq, to_seq, indb_time)
                   SELECT *, %s FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],
                                         %s::text[], %s::text[], %s::text[], %s::bigint[],
                                         %s::bigint[])
                   ON CONFLICT (msgfrom, msgid) DO NOTHING""",
                (stamp, *[texts(c) for c in cols[:7]], *[ints(c) for c in cols[7:]]))
    return cur.rowcount


# --- group streams and messages --------------------------------------------------------

def lock_groups(cur, gids: list[str]) -> dict[str, int]:
    """Lock the counters of the live groups among `gids` in gid order; gid → last_seq."""
    cur.execute("SELECT gid, last_seq FROM tp_im_group WHERE gid = ANY(%s::text[]) "
                "AND NOT dismissed ORDER BY gid FOR UPDATE", (texts(sorted(gids)),))
    return dict(cur.fetchall())


def update_groups(cur, last: dict[str, int]) -> None:
    gids = sorted(last)
    cur.execute("""UPDATE tp_im_group g SET last_seq = v.last_seq
                   FROM unnest(%s::text[], %s::bigint[]) AS v(gid, last_seq)
                   WHERE g.gid = v.gid""", (texts(gids), ints(last[g] for g in gids)))


def existing_group_messages(cur, keys: list[Key]) -> dict[Key, tuple[int, datetime]]:
    """Already stored group messages among `keys`: key → (seq, indb_time)."""
    return _existing(cur, "tp_im_message_group", "seq", keys)


def insert_group_messages(cur, rows: list[tuple], stamp: datetime) -> int:
    """Insert rows of (msgid, msg, msgfrom, gid, send_time, from_res, seq) stamped `stamp`;
    returns how many were new."""
    cols = list(zip(*rows))
    cur.execute("""INSERT INTO tp_im_message_group (msgid, msg, msgfrom, gid, send_time,
                                                    from_res, seq, indb_time)
                   SELECT *, %s FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],
                                         %s::text[], %s::text[], %s::bigint[])
                   ON CONFLICT (msgfrom, msgid) DO NOTHING""",
                (stamp, *[texts(c) for c in cols[:6]], ints(cols[6])))
    return cur.rowcount


def advance_group_given(cur, rows: list[tuple[str, str, int]]) -> None:
    """Raise tp_im_group_peer.given_seq for (gid, uid, seq) rows."""
    rows = sorted(rows)
    cur.execute("""UPDATE tp_im_group_peer p SET given_seq = v.seq
                   FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS v(gid, uid, seq)
                   WHERE p.gid = v.gid AND p.userid = v.uid AND p.given_seq < v.seq""",
                (texts(r[0] for r in rows), texts(r[1] for r in rows), ints(r[2] for r in rows)))


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
