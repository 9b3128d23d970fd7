"""SQL of friendships (tp_im_roster_frd) and friend requests (tp_im_roster_req)."""

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Request:
    msgid: str
    msgfrom: str
    msgto: str
    msg: str
    state: int
    send_time: datetime


REQUEST_COLUMNS = "msgid, msgfrom, msgto, COALESCE(msg, ''), state, send_time"


def request_time(cur, sender: str, msgid: str) -> datetime | None:
    """When the request (sender, msgid) was stored, or None if there is none."""
    cur.execute("SELECT send_time FROM tp_im_roster_req WHERE msgfrom = %s AND msgid = %s",
                (sender, msgid))
    row = cur.fetchone()
    return row[0] if row else None


def insert_request(cur, sender: str, msgid: str, to: str, msg: str) -> datetime | None:
    """Store a new request; returns its time, or None if (sender, msgid) already exists."""
    cur.execute("""INSERT INTO tp_im_roster_req (msgid, msg, msgfrom, msgto)
                   VALUES (%s, %s, %s, %s) ON CONFLICT (msgfrom, msgid) DO NOTHING
                   RETURNING send_time""", (msgid, msg, sender, to))
    row = cur.fetchone()
    return row[0] if row else None


def lock_request(cur, sender: str, msgid: str) -> Request | None:
    cur.execute(f"""SELECT {REQUEST_COLUMNS} FROM tp_im_roster_req
                    WHERE msgfrom = %s AND msgid = %s FOR UPDATE""", (sender, msgid))
    row = cur.fetchone()
    return Request(*row) if row else None


def lock_requests_to(cur, addressee: str, msgid: str) -> list[Request]:
    """Every request to `addressee` with that msgid (any sender), locked."""
    cur.execute(f"""SELECT {REQUEST_COLUMNS} FROM tp_im_roster_req
                    WHERE msgto = %s AND msgid = %s ORDER BY send_time FOR UPDATE""",
                (addressee, msgid))
    return [Request(*row) for row in cur.fetchall()]


def set_state(cur, req: Request, state: int) -> None:
    cur.execute("UPDATE tp_im_roster_req SET state = %s WHERE msgfrom = %s AND msgid = %s",
                (state, req.msgfrom, req.msgid))


def roster_groups(cur, uid: str) -> str | None:
    """The user's roster groups (the JSON text of tp_im_roster.grp)."""
    cur.execute("SELECT grp FROM tp_im_roster WHERE userid = %s", (uid,))
    row = cur.fetchone()
    return row[0] if row else None


def add_friend(cur, uid: str, fid: str, gid: str, fname: str) -> None:
    """uid's roster row for fid; an existing row (already friends) is kept as it is."""
    cur.execute("""INSERT INTO tp_im_roster_frd (userid, fid, gid, fname) VALUES (%s, %s, %s, %s)
                   ON CONFLICT (userid, fid) DO NOTHING""", (uid, fid, gid, fname))


def delete_friendship(cur, a: str, b: str) -> int:
    """Delete both directions; returns how many rows went."""
    cur.execute("""DELETE FROM tp_im_roster_frd
                   WHERE (userid = %s AND fid = %s) OR (userid = %s AND fid = %s)""",
                (a, b, b, a))
    return cur.rowcount

