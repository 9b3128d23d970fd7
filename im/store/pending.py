"""SQL of unhandled friend requests and group invitations, to or from a user."""

from im import db
from im.store.friends import REQUEST_COLUMNS, Request

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


RESEND = {"im_login_resend": f"""(text[], bigint) AS
    SELECT 0 AS kind, u.uid, r.* FROM unnest($1) AS u(uid), LATERAL (
        SELECT {REQUEST_COLUMNS}, NULL::varchar AS gid, NULL::varchar AS gname
        FROM tp_im_roster_req WHERE msgto = u.uid AND state = 0 AND received = 0
        ORDER BY send_time LIMIT $2) r
    UNION ALL
    SELECT 1, r.msgto, r.msgid, r.msgfrom, r.msgto, '', r.state, r.send_time, r.gid, g.gname
    FROM tp_im_group_req r, LATERAL (SELECT gname FROM tp_im_group
                                     WHERE gid = r.gid AND NOT dismissed LIMIT 1) g
    WHERE r.msgto = ANY($1) AND r.state = 0 AND r.received = 0
    ORDER BY kind, send_time"""}


def unreceived_to(cur, uids: list[str], limit: int) -> dict[str, tuple[list[Request], list[dict]]]:
    """What §1.5 re-sends at login, for several users in one prepared statement (planning cost
    PostgreSQL more than running it; LIMIT 1 keeps the group lookup a primary-key probe per
    invitation whatever the generic plan): uid → (unhandled friend requests to uid that no
    device of theirs has receipted (the oldest `limit`), unhandled, unreceived invitations to
    uid into live groups), each oldest first; users with neither are left out."""
    db.execute(cur, RESEND, "im_login_resend", (uids, limit))
    found: dict[str, tuple[list[Request], list[dict]]] = {}
    for kind, uid, msgid, msgfrom, msgto, msg, state, sent, gid, gname in cur.fetchall():
        requests, invitations = found.setdefault(uid, ([], []))
        if kind == 0:
            requests.append(Request(msgid, msgfrom, msgto, msg, state, sent))
        else:
            invitations.append({"msgid": msgid, "msgfrom": msgfrom, "msgto": msgto, "gid": gid,
                                "gname": gname})
    return found
