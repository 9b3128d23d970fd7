"""SQL of groups: TP_IM_GROUP, its members (TP_IM_GROUP_PEER) and invitations (TP_IM_GROUP_REQ).

A dismissed group keeps its rows (they may be purged later) but is invisible to every query
here that takes a group by id.
"""

from datetime import datetime

GROUP_COLUMNS = "gid, gname, userid, createtime, type, exit, last_seq"
PEER_COLUMNS = 'userid AS uid, fname, "right", join_time'
INVITATION_COLUMNS = "msgid, state, msgfrom, msgto, gid, gname, send_time"


def _dicts(cur) -> list[dict]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _dict(cur) -> dict | None:
    found = _dicts(cur)
    return found[0] if found else None


# --- groups -------------------------------------------------------------------------------

def insert_group(cur, gname: str, creator: str, gtype: str, exit_: str) -> str:
    """Create a group; returns its GID, taken from tp_im_group_gid_seq."""
    cur.execute("""INSERT INTO tp_im_group (gid, gname, userid, type, exit)
                   VALUES (nextval('tp_im_group_gid_seq')::text, %s, %s, %s, %s)
                   RETURNING gid""", (gname, creator, gtype, exit_))
    return cur.fetchone()[0]


def get_group(cur, gid: str, lock: bool = False) -> dict | None:
    """A live group; `lock` takes its row lock, serialising membership changes of the group."""
    cur.execute(f"SELECT {GROUP_COLUMNS} FROM tp_im_group WHERE gid = %s AND NOT dismissed"
                + (" FOR UPDATE" if lock else ""), (gid,))
    return _dict(cur)


def dismiss_group(cur, gid: str) -> None:
    cur.execute("UPDATE tp_im_group SET dismissed = true WHERE gid = %s", (gid,))


def groups_of(cur, uid: str) -> list[dict]:
    """The live groups uid belongs to, in the order they joined them, with uid's right."""
    cur.execute("""SELECT g.gid, g.gname, g.userid, g.createtime AS time, g.type, g.exit,
                          p."right", g.last_seq AS seq
                   FROM tp_im_group_peer p JOIN tp_im_group g ON g.gid = p.gid
                   WHERE p.userid = %s AND NOT g.dismissed
                   ORDER BY p.join_order""", (uid,))
    return _dicts(cur)


# --- members ------------------------------------------------------------------------------

def insert_member(cur, gid: str, uid: str, fname: str, right: str, seq: int) -> dict:
    """Add a member whose sync point is `seq` (the group's last number); returns the peer row.

    An empty `fname` falls back to the user's name.
    """
    cur.execute(f"""INSERT INTO tp_im_group_peer
                        (gid, userid, fname, "right", join_seq, sync_seq, given_seq)
                    VALUES (%s, %s, COALESCE(NULLIF(%s, ''),
                                             (SELECT name FROM im_user WHERE uid = %s), ''),
                            %s, %s, %s, %s)
                    RETURNING {PEER_COLUMNS}""", (gid, uid, fname, uid, right, seq, seq, seq))
    return _dict(cur)


def get_member(cur, gid: str, uid: str) -> dict | None:
    cur.execute(f"SELECT {PEER_COLUMNS} FROM tp_im_group_peer WHERE gid = %s AND userid = %s",
                (gid, uid))
    return _dict(cur)


def peers(cur, gid: str, offset: int, limit: int) -> list[dict]:
    """Members by join order (ties within a second keep the order of joining, §6.7)."""
    cur.execute(f"""SELECT {PEER_COLUMNS} FROM tp_im_group_peer WHERE gid = %s
                    ORDER BY join_order OFFSET %s LIMIT %s""", (gid, offset, limit))
    return _dicts(cur)


def member_uids(cur, gid: str) -> list[str]:
    cur.execute("SELECT userid FROM tp_im_group_peer WHERE gid = %s ORDER BY join_order", (gid,))
    return [r[0] for r in cur.fetchall()]


def remove_member(cur, gid: str, uid: str) -> None:
    cur.execute("DELETE FROM tp_im_group_peer WHERE gid = %s AND userid = %s", (gid, uid))


def ensure_admin(cur, gid: str) -> str | None:
    """Make the longest-standing member an admin if the group has none; returns who."""
    cur.execute("""UPDATE tp_im_group_peer SET "right" = '1'
                   WHERE gid = %s AND userid = (
                       SELECT userid FROM tp_im_group_peer WHERE gid = %s
                       ORDER BY join_order LIMIT 1)
                     AND NOT EXISTS (SELECT 1 FROM tp_im_group_peer
                                     WHERE gid = %s AND "right" = '1')
                   RETURNING userid""", (gid, gid, gid))
    found = cur.fetchone()
    return found[0] if found else None


# --- invitations --------------------------------------------------------------------------

def insert_invitation(cur, msgid: str, sender: str, to: str, gid: str,
                      gname: str) -> datetime | None:
    """Store an invitation; returns its SEND_TIME, or None if (sender, msgid) exists already."""
    cur.execute("""INSERT INTO tp_im_group_req (msgid, msgfrom, msgto, gid, gname)
                   VALUES (%s, %s, %s, %s, %s) ON CONFLICT (msgfrom, msgid) DO NOTHING
                   RETURNING send_time""", (msgid, sender, to, gid, gname))
    found = cur.fetchone()
    return found[0] if found else None


def get_invitation(cur, sender: str, msgid: str) -> dict | None:
    cur.execute(f"SELECT {INVITATION_COLUMNS} FROM tp_im_group_req "
                "WHERE msgfrom = %s AND msgid = %s", (sender, msgid))
    return _dict(cur)


def invitations_to(cur, to: str, msgid: str) -> list[dict]:
    """Every invitation to `to` with that msgid, unhandled ones first."""
    cur.execute(f"SELECT {INVITATION_COLUMNS} FROM tp_im_group_req "
                "WHERE msgto = %s AND msgid = %s ORDER BY state, send_time", (to, msgid))
    return _dicts(cur)


def close_invitation(cur, sender: str, msgid: str, state: int) -> bool:
    """Set an unhandled invitation's STATE; False if it was handled already."""
    cur.execute("""UPDATE tp_im_group_req SET state = %s
                   WHERE msgfrom = %s AND msgid = %s AND state = 0""", (state, sender, msgid))
    return cur.rowcount == 1
