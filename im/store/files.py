"""SQL of the file server (PROTOCOL.md §3): who owns a name, how many bytes are committed."""

FILE_COLUMNS = ("owner", "filesize", "size", "complete", "md5", "durable", "boot")


def claim(cur, name: str, owner: str, filesize: int) -> bool:
    """Record `owner` as the name's owner unless someone already is; whether this did."""
    cur.execute("""INSERT INTO im_file (name, owner, filesize, durable) VALUES (%s, %s, %s, 0)
                   ON CONFLICT (name) DO NOTHING""", (name, owner, filesize))
    return cur.rowcount == 1


def lock(cur, name: str, begin: bool = False) -> dict | None:
    """The name's row, locked until commit: uploads of one name are serialised. `begin` opens
    the transaction in the same round trip (on an autocommit connection)."""
    cur.execute(("BEGIN; " if begin else "") +
                f"SELECT {', '.join(FILE_COLUMNS)} FROM im_file WHERE name = %s FOR UPDATE", (name,))
    found = cur.fetchone()
    return dict(zip(FILE_COLUMNS, found)) if found else None


def get(cur, name: str) -> dict | None:
    cur.execute(f"SELECT {', '.join(FILE_COLUMNS)} FROM im_file WHERE name = %s", (name,))
    found = cur.fetchone()
    return dict(zip(FILE_COLUMNS, found)) if found else None


def set_size(cur, name: str, size: int, complete: bool, durable: int, boot: str | None,
             flush: bool = True, commit: bool = False) -> None:
    """Count `size` bytes, `durable` of them fsynced, the rest written during `boot`; `commit`
    in the same round trip. Without `flush` the commit does not wait for its WAL to reach the
    disk (a crash may forget this count, never half of the transaction)."""
    cur.execute(("" if flush else "SET LOCAL synchronous_commit TO off; ") +
                "UPDATE im_file SET size = %s, complete = %s, durable = %s, boot = %s WHERE name = %s" +
                ("; COMMIT" if commit else ""), (size, complete, durable, boot, name))


def raise_durable(cur, name: str, upto: int) -> None:
    """Record `upto` bytes fsynced, unless the count fell below it meanwhile (or the file is
    complete: its last fsync covered everything)."""
    cur.execute("""UPDATE im_file SET durable = %(n)s
                   WHERE name = %(f)s AND durable < %(n)s AND size >= %(n)s AND NOT complete""",
                {"n": upto, "f": name})


def commit(cur) -> None:
    cur.execute("COMMIT")


def set_md5(cur, name: str, md5: str) -> None:
    cur.execute("UPDATE im_file SET md5 = %s WHERE name = %s AND complete", (md5, name))


def avatar_of(cur, uid: str) -> str | None:
    cur.execute("SELECT avatar FROM tp_im_roster WHERE userid = %s", (uid,))
    found = cur.fetchone()
    return found[0] if found else None
