"""SQL of the admin broadcast's live delivery: a process loads the broadcast's messages to its
own online users and records them as given (PROTOCOL.md §6.12)."""

COLS = ("msgid", "msg", "msgfrom", "msgto", "from_res", "to_res", "to_seq", "indb_time")


def messages_to(cur, sender: str, msgid_prefix: str, lo: int, hi: int,
                uids: list[str]) -> list[dict]:
    """The messages of one broadcast (sender's positions lo..hi, msgids starting with
    `msgid_prefix`) to any of `uids`."""
    cur.execute(f"""SELECT {", ".join(COLS)} FROM tp_im_message
                    WHERE msgfrom = %s AND from_seq BETWEEN %s AND %s
                      AND msgto = ANY(%s::text[]) AND left(msgid, %s) = %s""",
                (sender, lo, hi, uids, len(msgid_prefix), msgid_prefix))
    return [dict(zip(COLS, row)) for row in cur.fetchall()]


def advance_given(cur, given: dict[str, int]) -> None:
    """Raise each uid's given_seq to at least the position given."""
    uids = sorted(given)
    cur.execute("""UPDATE im_mailbox m SET given_seq = GREATEST(m.given_seq, v.seq)
                   FROM unnest(%s::text[], %s::bigint[]) AS v(uid, seq) WHERE m.uid = v.uid""",
                (uids, [given[u] for u in uids]))
