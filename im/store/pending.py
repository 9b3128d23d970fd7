"""SQL of unhandled friend requests and group invitations, to or from a user."""

PENDING_NAMES = ("kind", "dir", "msgid", "from", "to", "gid", "gname", "msg", "time")


def pending(cur, uid: str, limit: int) -> list[dict]:
    """Unhandled (STATE 0) requests to or from uid, oldest first; invitations to a dismissed
    group are left out."""
    cur.execute("""
        (SELECT 'friend' AS kind, 'in' AS dir, msgid, msgfrom, msgto, '' AS gid, '' AS gname,
                msg, send_time
         FROM tp_im_roster_req WHERE msgto = %(u)s AND state = 0
         ORDER BY send_time LIMIT %(n)s)
        UNION ALL
        (SELECT 'friend', 'out', msgid, msgfrom, msgto, '', '', msg, send_time
         FROM tp_im_roster_req WHERE msgfrom = %(u)s AND state = 0
         ORDER BY send_time LIMIT %(n)s)
        UNION ALL
        (SELECT 'group', CASE WHEN r.msgto = %(u)s THEN 'in' ELSE 'out' END, r.msgid,
                r.msgfrom, r.msgto, r.gid, COALESCE(g.gname, r.gname), '', r.send_time
         FROM tp_im_group_req r JOIN tp_im_group g ON g.gid = r.gid AND NOT g.dismissed
         WHERE (r.msgto = %(u)s OR r.msgfrom = %(u)s) AND r.state = 0
         ORDER BY r.send_time LIMIT %(n)s)
        ORDER BY send_time, msgid LIMIT %(n)s""", {"u": uid, "n": limit})
    return [dict(zip(PENDING_NAMES, row)) for row in cur.fetchall()]
