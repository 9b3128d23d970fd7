"""SQL of departments and the contacts directory (PROTOCOL.md §2.5).

Version discipline (every writer of im_dept, and of a user's directory fields): lock the
im_version row first (`lock_version`, or the UPDATE of `bump_version`), keep the lock until
commit, and stamp the changed rows with the number taken in the same transaction. Because the
row lock is held until commit, a writer cannot take number V+1 before the writer of V has
committed: versions commit in ascending order. A reader whose snapshot shows version V
therefore also shows every version below V, so `contacts_page` (one statement, one snapshot)
never returns V+1 while V is still in flight, and a client continuing from the last `ver` it
saw cannot miss a row.
"""

CONTACT_COLUMNS = ("uid", "name", "deptid", "position", "telephone", "cellphone", "email",
                   "avatar", "sign", "ver", "deleted")
DIRECTORY_COLUMNS = ("name", "deptid", "position", "telephone", "cellphone", "email")
DEPT_COLUMNS = ("deptid", "pid", "name", "ord")


def version(cur, name: str) -> int:
    cur.execute("SELECT ver FROM im_version WHERE name = %s", (name,))
    return cur.fetchone()[0]


def versions(cur, names: list[str]) -> dict[str, int]:
    cur.execute("SELECT name, ver FROM im_version WHERE name = ANY(%s)", (names,))
    return dict(cur.fetchall())


def lock_version(cur, name: str) -> int:
    """Take the version row's lock (held until commit) without bumping; returns the version."""
    cur.execute("SELECT ver FROM im_version WHERE name = %s FOR UPDATE", (name,))
    return cur.fetchone()[0]


def bump_version(cur, name: str) -> int:
    cur.execute("UPDATE im_version SET ver = ver + 1 WHERE name = %s RETURNING ver", (name,))
    return cur.fetchone()[0]


# --- departments ----------------------------------------------------------------------------

def list_depts(cur) -> list[dict]:
    cur.execute("SELECT deptid, pid, name, ord FROM im_dept ORDER BY pid, ord, deptid")
    return [dict(zip(DEPT_COLUMNS, r)) for r in cur.fetchall()]


def dept_parents(cur) -> dict[str, str]:
    cur.execute("SELECT deptid, pid FROM im_dept")
    return dict(cur.fetchall())


def get_dept(cur, deptid: str) -> dict | None:
    cur.execute("SELECT deptid, pid, name, ord FROM im_dept WHERE deptid = %s", (deptid,))
    found = cur.fetchone()
    return dict(zip(DEPT_COLUMNS, found)) if found else None


def upsert_dept(cur, dept: dict) -> None:
    cur.execute("""INSERT INTO im_dept (deptid, pid, name, ord) VALUES (%s, %s, %s, %s)
                   ON CONFLICT (deptid) DO UPDATE
                   SET pid = EXCLUDED.pid, name = EXCLUDED.name, ord = EXCLUDED.ord""",
                [dept[c] for c in DEPT_COLUMNS])


def delete_dept(cur, deptid: str) -> bool:
    cur.execute("DELETE FROM im_dept WHERE deptid = %s", (deptid,))
    return cur.rowcount == 1


def has_children(cur, deptid: str) -> bool:
    cur.execute("SELECT 1 FROM im_dept WHERE pid = %s LIMIT 1", (deptid,))
    return cur.fetchone() is not None


# --- contacts -------------------------------------------------------------------------------

def contacts_page(cur, after_ver: int, limit: int) -> tuple[list[dict], bool]:
    """Users with ver > after_ver in (ver, uid) order: `limit` rows, then every other row of
    the last row's version (a page never splits a version); and whether more rows follow."""
    cur.execute("""
        WITH cut AS (SELECT ver FROM im_user WHERE ver > %(after)s
                     ORDER BY ver LIMIT 1 OFFSET %(skip)s)
        SELECT u.uid, u.name, u.deptid, u.position, u.telephone, u.cellphone, u.email,
               coalesce(r.avatar, ''), coalesce(r.sign, ''), u.ver, u.disabled,
               EXISTS (SELECT 1 FROM im_user m WHERE m.ver > (SELECT ver FROM cut))
        FROM im_user u LEFT JOIN tp_im_roster r ON r.userid = u.uid
        WHERE u.ver > %(after)s
          AND u.ver <= coalesce((SELECT ver FROM cut), 9223372036854775807)
        ORDER BY u.ver, u.uid""", {"after": after_ver, "skip": limit - 1})
    found = cur.fetchall()
    more = bool(found) and found[-1][-1]
    return [dict(zip(CONTACT_COLUMNS, r[:-1])) for r in found], more


def directory_entries(cur, uids: list[str]) -> dict[str, dict]:
    """The directory fields of these users, by uid."""
    cur.execute(f"SELECT uid, {', '.join(DIRECTORY_COLUMNS)} FROM im_user WHERE uid = ANY(%s)",
                (uids,))
    return {r[0]: dict(zip(DIRECTORY_COLUMNS, r[1:])) for r in cur.fetchall()}


def update_directory(cur, uid: str, fields: dict, ver: int) -> None:
    sets = ", ".join(f"{k} = %s" for k in fields)
    cur.execute(f"UPDATE im_user SET {sets}, ver = %s WHERE uid = %s",
                [*fields.values(), ver, uid])


def enabled_uids(cur) -> list[str]:
    cur.execute("SELECT uid FROM im_user WHERE NOT disabled ORDER BY uid")
    return [r[0] for r in cur.fetchall()]
