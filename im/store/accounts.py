"""SQL of accounts: users, password hashes, session tokens, failed-login counts."""

from datetime import datetime

import psycopg2

from im import db

USER_FIELDS = ("name", "deptid", "sex", "age", "birthday", "telephone", "cellphone", "email",
               "address", "zipcode", "position")
DIRECTORY_FIELDS = {"name", "deptid", "telephone", "cellphone", "email", "position", "disabled"}


def bump_contacts_version(cur) -> int:
    cur.execute("UPDATE im_version SET ver = ver + 1 WHERE name = 'contacts' RETURNING ver")
    return cur.fetchone()[0]


def insert_user(cur, uid: str, pwd_hash: str, fields: dict, ver: int) -> bool:
    """Create a user with its roster header and mailbox; False if the uid exists."""
    cols = [k for k in USER_FIELDS if k in fields]
    names = ", ".join(["uid", "pwd_hash", "ver"] + cols)
    marks = ", ".join(["%s"] * (3 + len(cols)))
    cur.execute(f"INSERT INTO im_user ({names}) VALUES ({marks}) ON CONFLICT (uid) DO NOTHING",
                [uid, pwd_hash, ver] + [fields[k] for k in cols])
    if cur.rowcount == 0:
        return False
    cur.execute("INSERT INTO tp_im_roster (userid) VALUES (%s) ON CONFLICT DO NOTHING", (uid,))
    cur.execute("INSERT INTO im_mailbox (uid) VALUES (%s) ON CONFLICT DO NOTHING", (uid,))
    return True


def existing_uids(cur, uids: list[str]) -> set[str]:
    cur.execute("SELECT uid FROM im_user WHERE uid = ANY(%s)", (uids,))
    return {r[0] for r in cur.fetchall()}


def get_auth(cur, uid: str) -> tuple[str, bool] | None:
    cur.execute("SELECT pwd_hash, disabled FROM im_user WHERE uid = %s", (uid,))
    return cur.fetchone()


def get_user(cur, uid: str) -> dict | None:
    cur.execute("""SELECT u.uid, u.name, u.deptid, u.sex, u.age, u.birthday, u.telephone,
                          u.cellphone, u.email, u.address, u.zipcode, u.position, u.disabled,
                          u.ver, u.created_at, r.sign, r.avatar
                   FROM im_user u LEFT JOIN tp_im_roster r ON r.userid = u.uid
                   WHERE u.uid = %s""", (uid,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row))


def update_user(cur, uid: str, fields: dict, ver: int | None) -> bool:
    """Update im_user columns in `fields` (and stamp `ver` if given); False if no such user."""
    sets = [f"{k} = %s" for k in fields]
    args = list(fields.values())
    if ver is not None:
        sets.append("ver = %s")
        args.append(ver)
    if not sets:
        cur.execute("SELECT 1 FROM im_user WHERE uid = %s", (uid,))
        return cur.fetchone() is not None
    cur.execute(f"UPDATE im_user SET {', '.join(sets)} WHERE uid = %s", args + [uid])
    return cur.rowcount == 1


def list_users(cur, limit: int = 1000) -> list[tuple]:
    cur.execute("SELECT uid, name, deptid, disabled FROM im_user ORDER BY uid LIMIT %s", (limit,))
    return cur.fetchall()


def insert_token(cur, token_hash: bytes, uid: str, expires_at: datetime) -> None:
    cur.execute("INSERT INTO im_token (token_hash, uid, expires_at) VALUES (%s, %s, %s)",
                (token_hash, uid, expires_at))


TOKEN_OWNERS = {"im_token_owners": """(bytea[]) AS
    SELECT t.token_hash, t.uid, u.disabled, t.expires_at FROM im_token t JOIN im_user u ON u.uid = t.uid
    WHERE t.token_hash = ANY($1) AND NOT t.revoked AND t.expires_at > now()"""}


def token_owners(cur, token_hashes: list[bytes]) -> dict[bytes, tuple[str, bool, datetime]]:
    """token hash → (uid, disabled, expires_at) of those of `token_hashes` that are live.
    Prepared once per pooled connection: planning cost PostgreSQL several times more than
    these primary-key lookups."""
    db.execute(cur, TOKEN_OWNERS, "im_token_owners", ([psycopg2.Binary(h) for h in token_hashes],))
    return {bytes(digest): (uid, disabled, expires) for digest, uid, disabled, expires in cur.fetchall()}


def revoke_token(cur, token_hash: bytes) -> None:
    cur.execute("UPDATE im_token SET revoked = true WHERE token_hash = %s", (token_hash,))


def revoke_user_tokens(cur, uid: str, keep: bytes | None = None) -> None:
    cur.execute("""UPDATE im_token SET revoked = true
                   WHERE uid = %s AND NOT revoked AND token_hash IS DISTINCT FROM %s""", (uid, keep))
    cur.execute("DELETE FROM im_token WHERE uid = %s AND expires_at < now()", (uid,))


def count_failures(cur, addr: str, uid: str) -> tuple[int, int]:
    """Failed password logins in the last minute: (from addr for uid, from addr in all)."""
    cur.execute("""SELECT count(*) FILTER (WHERE uid = %s), count(*) FROM im_login_failure
                   WHERE addr = %s AND at > now() - interval '1 minute'""", (uid, addr))
    return cur.fetchone()


def record_failure(cur, addr: str, uid: str) -> None:
    cur.execute("DELETE FROM im_login_failure WHERE addr = %s AND at < now() - interval '1 minute'",
                (addr,))
    cur.execute("INSERT INTO im_login_failure (addr, uid) VALUES (%s, %s)", (addr, uid[:50]))
