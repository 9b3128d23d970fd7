"""SQL behind the friendship and group-membership caches."""


def friend_uids(cur, uid: str) -> list[str]:
    cur.execute("SELECT fid FROM tp_im_roster_frd WHERE userid = %s", (uid,))
    return [r[0] for r in cur.fetchall()]


def member_uids(cur, gid: str) -> list[str] | None:
    """Members of a live group by join order, or None if the group does not exist."""
    cur.execute("SELECT 1 FROM tp_im_group WHERE gid = %s AND NOT dismissed", (gid,))
    if cur.fetchone() is None:
        return None
    cur.execute("SELECT userid FROM tp_im_group_peer WHERE gid = %s ORDER BY join_order", (gid,))
    return [r[0] for r in cur.fetchall()]


def user_exists(cur, uid: str) -> bool:
    cur.execute("SELECT 1 FROM im_user WHERE uid = %s", (uid,))
    return cur.fetchone() is not None
