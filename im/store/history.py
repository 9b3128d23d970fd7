"""SQL of stored chat as the HTTP API reads it: offline fetches, receipts and history.

Every query walks an index in stream order: 1:1 messages by a mailbox position (`to_seq` of
the recipient, `from_seq` of the sender), group messages by (gid, seq).
"""

from datetime import datetime

from im import db
from im.store import chat

# --- 1:1 ------------------------------------------------------------------------------
# 1:1 rows come from PostgreSQL as the contract's table rows in JSON text, spliced into the
# answer unparsed: shaping ~100 rows in Python (a datetime, eight dicts and their encoding
# per row) cost the server more than the query. Times are written in the configured timezone
# ($tz), as timefmt writes them.
# The reads are prepared once per pooled connection (`STATEMENTS`): planning cost PostgreSQL
# more than running them. Each is written so that the generic plan (used after the fifth
# execution) walks the same index as a custom one for a light or a heavy user: equality on the
# leading columns, the order and the bound on the next one.

def _row_json(*fields: tuple[str, str]) -> str:
    """SQL writing a row as the contract's JSON table row: `fields` are (name, SQL giving the
    value's JSON text), in order."""
    pieces = [f"""'{"}," if i else "["}{{"n":"{name}","v":' || {value}""" for i, (name, value) in enumerate(fields)]
    return " || ".join(pieces) + " || '}]'"


TIME_JSON = """'"' || to_char(indb_time AT TIME ZONE $tz, 'YYYY-MM-DD HH24:MI:SS') || '"'"""
SEQ_JSON = """'"' || seq || '"'"""
BODY_JSON = "to_json(COALESCE(msg, ''))"
MSG_COLS = "msgid, msgfrom, from_res, msgto, indb_time, msg"
ROW_JSON = _row_json(("msgid", "to_json(msgid)"), ("from", "to_json(msgfrom)"), ("from_res", "to_json(from_res)"),
                     ("to", "to_json(msgto)"), ("time", TIME_JSON), ("type", """'"0"'"""), ("body", BODY_JSON),
                     ("seq", SEQ_JSON))
GROUP_ROW_JSON = _row_json(("msgid", "to_json(msgid)"), ("from", "to_json(msgfrom)"), ("to", "to_json(gid)"),
                           ("time", TIME_JSON), ("body", BODY_JSON), ("seq", SEQ_JSON))


def _as_json(rows: str, tz: str, order: str = "seq", row_json: str = ROW_JSON) -> str:
    """`rows` (1:1 rows, seq last; or group rows with `GROUP_ROW_JSON`) in `order`, each as
    the text of its JSON table row."""
    return f"SELECT {row_json.replace('$tz', tz)} FROM ({rows}) r ORDER BY {order}"


def _handing_out(page: str, tz: str) -> str:
    """`page` (1:1 rows, seq last, at most $2 + 1 of them; $1 the uid) as one statement, in
    seq order, that also records the highest seq of its first $2 rows as given to $1 (never
    lowers it): a fetch is one round trip, and the read and the record share one snapshot."""
    return f"""WITH page AS ({page}),
                    given AS (
                        UPDATE im_mailbox b SET given_seq = g.seq
                        FROM (SELECT max(seq) AS seq
                              FROM (SELECT seq FROM page ORDER BY seq LIMIT $2) first) g
                        WHERE b.uid = $1 AND b.given_seq < g.seq)
                {_as_json("SELECT * FROM page", tz)}"""


STATEMENTS = {
    # uid, limit, tz: messages to uid after its receipt floor, not yet received
    "im_hist_unreceived": "(text, bigint, text) AS " + _handing_out(f"""
        SELECT {MSG_COLS}, to_seq AS seq FROM tp_im_message
        WHERE msgto = $1 AND received = 0 AND to_seq > COALESCE(
              (SELECT received_seq FROM im_received WHERE uid = $1), 0)
        ORDER BY to_seq LIMIT $2 + 1""", "$3"),
    # uid, limit, after, tz: uid's mailbox after a position, sent and received
    "im_hist_after": "(text, bigint, bigint, text) AS " + _handing_out(f"""
        (SELECT {MSG_COLS}, to_seq AS seq FROM tp_im_message
         WHERE msgto = $1 AND to_seq > $3 ORDER BY to_seq LIMIT $2 + 1)
        UNION ALL
        (SELECT {MSG_COLS}, from_seq FROM tp_im_message
         WHERE msgfrom = $1 AND from_seq > $3 AND msgto <> $1
         ORDER BY from_seq LIMIT $2 + 1)
        ORDER BY seq LIMIT $2 + 1""", "$4"),
    # uid, other, before, days, limit, tz: the pair's newest messages, both directions
    "im_hist_pair": "(text, text, bigint, integer, bigint, text) AS " + _as_json(f"""
        (SELECT {MSG_COLS}, to_seq AS seq FROM tp_im_message
         WHERE msgto = $1 AND msgfrom = $2 AND to_seq < $3
           AND indb_time >= now() - $4 * interval '1 day'
         ORDER BY to_seq DESC LIMIT $5)
        UNION ALL
        (SELECT {MSG_COLS}, from_seq FROM tp_im_message
         WHERE msgfrom = $1 AND msgto = $2 AND msgto <> msgfrom
           AND from_seq < $3 AND indb_time >= now() - $4 * interval '1 day'
         ORDER BY from_seq DESC LIMIT $5)
        ORDER BY seq DESC LIMIT $5""", "$6", "seq DESC"),
    # gid, uid, before, days, limit, tz: the newest messages of a live group uid is a member
    # of, after uid joined (no rows: not a member, no such group, or none). The membership is
    # a bound of the index walk (one lookup): joined to the messages, a plan made without
    # statistics read the whole group and sorted it.
    "im_hist_group": "(text, text, bigint, integer, bigint, text) AS " + _as_json("""
        SELECT msgid, msgfrom, gid, indb_time, msg, seq FROM tp_im_message_group
        WHERE gid = $1 AND seq < $3 AND seq > (
              SELECT p.join_seq FROM tp_im_group_peer p
              JOIN tp_im_group g ON g.gid = p.gid AND NOT g.dismissed
              WHERE p.gid = $1 AND p.userid = $2)
          AND indb_time >= now() - $4 * interval '1 day'
        ORDER BY seq DESC LIMIT $5""", "$6", "seq DESC", GROUP_ROW_JSON),
    # uid, gid or NULL, limit, tz: up to $3 + 1 messages after uid's sync point (and after
    # joining) of each of uid's live groups, or of gid only, by gid then seq; the highest seq
    # of each group among the first $3 is recorded as given to uid (never lowered)
    "im_hist_group_unsynced": "(text, text, bigint, text) AS " + f"""
        WITH page AS (
            SELECT m.msgid, m.msgfrom, m.gid, m.indb_time, m.msg, m.seq
            FROM tp_im_group_peer p
            JOIN tp_im_group g ON g.gid = p.gid AND NOT g.dismissed
            CROSS JOIN LATERAL (
                SELECT msgid, msgfrom, gid, indb_time, msg, seq FROM tp_im_message_group
                WHERE gid = p.gid AND seq > GREATEST(p.sync_seq, p.join_seq)
                ORDER BY seq LIMIT $3 + 1) m
            WHERE p.userid = $1 AND ($2::varchar IS NULL OR p.gid = $2)
            ORDER BY p.gid, m.seq LIMIT $3 + 1),
        given AS (
            UPDATE tp_im_group_peer p SET given_seq = f.seq
            FROM (SELECT gid, max(seq) AS seq
                  FROM (SELECT gid, seq FROM page ORDER BY gid, seq LIMIT $3) first
                  GROUP BY gid) f
            WHERE p.gid = f.gid AND p.userid = $1 AND p.given_seq < f.seq)
        {_as_json("SELECT * FROM page", "$4", "gid, seq", GROUP_ROW_JSON)}""",
}


def _texts(cur) -> list[str]:
    return [row for row, in cur.fetchall()]


def unreceived(cur, uid: str, limit: int, tz: str) -> list[str]:
    """Up to limit + 1 messages to uid not yet marked received (JSON table rows), in mailbox
    order; the first `limit` count as given."""
    db.execute(cur, STATEMENTS, "im_hist_unreceived", (uid, limit, tz))
    return _texts(cur)


def mailbox_after(cur, uid: str, after: int, limit: int, tz: str) -> list[str]:
    """Up to limit + 1 rows of uid's mailbox after position `after` (JSON table rows), sent
    and received (a message to oneself once); the first `limit` count as given."""
    db.execute(cur, STATEMENTS, "im_hist_after", (uid, limit, after, tz))
    return _texts(cur)


def mark_received_upto(cur, uid: str, seq: int) -> int:
    """Mark received the messages to uid up to position min(seq, given_seq)."""
    return chat.mark_received_upto(cur, [(uid, seq)])


def mark_received_before(cur, uid: str, before: datetime) -> int:
    """Mark received the messages to uid stored before `before`, up to given_seq."""
    cur.execute("""UPDATE tp_im_message SET received = 1
                   FROM im_mailbox b LEFT JOIN im_received r ON r.uid = b.uid
                   WHERE b.uid = %(u)s AND msgto = %(u)s AND to_seq > COALESCE(r.received_seq, 0)
                     AND to_seq <= b.given_seq AND received = 0 AND indb_time < %(t)s""",
                {"u": uid, "t": before})
    return cur.rowcount


def conversation(cur, uid: str, other: str, before: int, days: int, limit: int,
                 tz: str) -> list[str]:
    """The newest `limit` messages between uid and other (JSON table rows), both directions,
    before uid's mailbox position `before` and within `days`; newest first."""
    db.execute(cur, STATEMENTS, "im_hist_pair", (uid, other, before, days, limit, tz))
    return _texts(cur)


# --- groups ---------------------------------------------------------------------------

def membership(cur, gid: str, uid: str) -> bool | None:
    """Whether uid is a member of the live group gid; None if there is no such group."""
    cur.execute("""SELECT p.userid IS NOT NULL FROM tp_im_group g
                   LEFT JOIN tp_im_group_peer p ON p.gid = g.gid AND p.userid = %s
                   WHERE g.gid = %s AND NOT g.dismissed""", (uid, gid))
    row = cur.fetchone()
    return None if row is None else row[0]


def group_unsynced(cur, uid: str, gid: str | None, limit: int, tz: str) -> list[str]:
    """Up to limit + 1 messages after uid's sync point (and after joining) of each of uid's
    groups, or of gid only (JSON table rows), ordered by gid then seq; per group, the highest
    seq among the first `limit` counts as given."""
    db.execute(cur, STATEMENTS, "im_hist_group_unsynced", (uid, gid, limit, tz))
    return _texts(cur)


def group_mark_seq(cur, uid: str, gid: str, seq: int) -> None:
    """Move uid's sync point of gid forward to min(seq, given_seq); mirror its time."""
    cur.execute("""UPDATE tp_im_group_peer SET sync_seq = GREATEST(sync_seq, LEAST(%s, given_seq))
                   WHERE gid = %s AND userid = %s RETURNING sync_seq""", (seq, gid, uid))
    row = cur.fetchone()
    if row is None:
        return
    cur.execute("""UPDATE tp_im_roster SET update_time = COALESCE(
                       (SELECT indb_time FROM tp_im_message_group WHERE gid = %s AND seq = %s),
                       update_time)
                   WHERE userid = %s""", (gid, row[0], uid))


def group_mark_before(cur, uid: str, before: datetime, mark: datetime, gid: str | None) -> None:
    """Move uid's sync point of each group (or of gid) forward to its last message stored
    before `before`, capped by given_seq; mirror `mark` as the roster's update time."""
    cur.execute("""UPDATE tp_im_group_peer p SET sync_seq = GREATEST(p.sync_seq, COALESCE(
                       (SELECT m.seq FROM tp_im_message_group m
                        WHERE m.gid = p.gid AND m.seq <= p.given_seq AND m.indb_time < %(t)s
                        ORDER BY m.seq DESC LIMIT 1), 0))
                   WHERE p.userid = %(u)s AND (%(g)s::varchar IS NULL OR p.gid = %(g)s)""",
                {"u": uid, "t": before, "g": gid})
    cur.execute("UPDATE tp_im_roster SET update_time = %s WHERE userid = %s", (mark, uid))


def group_history(cur, uid: str, gid: str, before: int, days: int, limit: int, tz: str) -> list[str]:
    """The newest `limit` messages of gid before `before` that uid may see (after joining),
    within `days` (JSON table rows), newest first; none if uid is not a member of gid."""
    db.execute(cur, STATEMENTS, "im_hist_group", (gid, uid, before, days, limit, tz))
    return _texts(cur)
