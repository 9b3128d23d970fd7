"""SQL of the roster: the user's header row (groups, sign, avatar) and their friend rows."""


def get_header(cur, uid: str) -> tuple[str, str, str] | None:
    """(grp, sign, avatar) of the user's roster header, None if there is none."""
    cur.execute("SELECT grp, sign, avatar FROM tp_im_roster WHERE userid = %s", (uid,))
    return cur.fetchone()


def get_grp_for_update(cur, uid: str) -> str | None:
    cur.execute("SELECT grp FROM tp_im_roster WHERE userid = %s FOR UPDATE", (uid,))
    row = cur.fetchone()
    return row[0] if row else None


def friends(cur, uid: str) -> list[dict]:
    """The user's friends with their roster remark and the friend's own name, sign, avatar."""
    cur.execute("""SELECT f.fid, f.gid, f.fname, u.name, r.sign, r.avatar
                   FROM tp_im_roster_frd f
                   LEFT JOIN im_user u ON u.uid = f.fid
                   LEFT JOIN tp_im_roster r ON r.userid = f.fid
                   WHERE f.userid = %s ORDER BY f.fid""", (uid,))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def set_grp(cur, uid: str, grp: str, gids: list[str], default_gid: str) -> None:
    """Store the group list; friends filed under a group that no longer exists move to the
    default group."""
    cur.execute("UPDATE tp_im_roster SET grp = %s WHERE userid = %s", (grp, uid))
    cur.execute("""UPDATE tp_im_roster_frd SET gid = %s
                   WHERE userid = %s AND (gid IS NULL OR NOT gid = ANY(%s))""",
                (default_gid, uid, gids))


def set_header_field(cur, uid: str, field: str, value: str, ver: int) -> None:
    """Set `sign` or `avatar` and stamp the user's contacts version (the directory shows both)."""
    if field not in ("sign", "avatar"):
        raise ValueError(field)
    cur.execute(f"UPDATE tp_im_roster SET {field} = %s WHERE userid = %s", (value, uid))
    cur.execute("UPDATE im_user SET ver = %s WHERE uid = %s", (ver, uid))


def set_friend_field(cur, uid: str, fid: str, field: str, value: str) -> bool:
    """Set `gid` or `fname` of one friend row; False if fid is not the user's friend."""
    if field not in ("gid", "fname"):
        raise ValueError(field)
    cur.execute(f"UPDATE tp_im_roster_frd SET {field} = %s WHERE userid = %s AND fid = %s",
                (value, uid, fid))
    return cur.rowcount == 1
