"""Stored chat over HTTP (PROTOCOL.md §2.3, §6.12): offline fetches, receipts and history.

Messages are stored straight into the database the way the chat path stores them (each takes
the next mailbox or group position), so that a test controls exactly what is stored when.
"""

import secrets
import time
from datetime import datetime, timedelta, timezone

import psycopg2
import psycopg2.extensions
import pytest

from im import db, protocol
from im.client import HttpError, rows
from im.schema import SCHEMA_FILE
from im.store import history, pending
from test_roster_qids import api, assert_needs_token, refused

HISTORY_QIDS = ("QID_IM_GET_OFFLINE_MSG", "QID_IM_RECIVE_OFFLINE_MSG",
                "QID_IM_GET_ROSTER_MSG_HISTORY", "QID_IM_GET_GROUP_OFFLINE_MSG",
                "QID_IM_RECIVE_GROUP_OFFLINE_MSG", "QID_IM_GET_GROUP_MSG_HISTORY")


# --- storing what the chat path would store --------------------------------------------

def store_message(server, frm: str, to: str, body: str, ago_days: float = 0) -> dict:
    """Store a 1:1 message taking the next position of each mailbox (one position when sent
    to oneself); returns its row."""
    args = {"id": secrets.token_hex(8), "b": body, "f": frm, "t": to, "ago": ago_days}
    (from_seq, to_seq), = server.sql(
        """WITH s AS (UPDATE im_mailbox SET last_seq = last_seq + 1 WHERE uid = %(f)s
                      RETURNING last_seq),
                r AS (UPDATE im_mailbox SET last_seq = last_seq + 1
                      WHERE uid = %(t)s AND uid <> %(f)s RETURNING last_seq)
           INSERT INTO tp_im_message (msgid, msg, msgfrom, msgto, from_res, from_seq, to_seq,
                                      indb_time)
           SELECT %(id)s, %(b)s, %(f)s, %(t)s, 'android', s.last_seq,
                  COALESCE((SELECT last_seq FROM r), s.last_seq),
                  now() - %(ago)s * interval '1 day' FROM s
           RETURNING from_seq, to_seq""", args)
    return {"msgid": args["id"], "from": frm, "to": to, "body": body, "from_seq": from_seq,
            "to_seq": to_seq}


def make_group(server, joined: dict[str, int]) -> str:
    """A group whose members joined when its stream was at the given seq."""
    gid = "h" + secrets.token_hex(6)
    server.sql("INSERT INTO tp_im_group (gid, gname, userid) VALUES (%s, 'team', %s)",
               (gid, next(iter(joined))))
    for uid, seq in joined.items():
        server.sql("""INSERT INTO tp_im_group_peer (gid, userid, fname, join_seq, sync_seq, given_seq)
                      VALUES (%s, %s, %s, %s, %s, %s)""", (gid, uid, uid, seq, seq, seq))
    return gid


def store_group_message(server, gid: str, frm: str, body: str, ago_days: float = 0) -> int:
    (seq,), = server.sql(
        """WITH g AS (UPDATE tp_im_group SET last_seq = last_seq + 1 WHERE gid = %s
                      RETURNING last_seq)
           INSERT INTO tp_im_message_group (msgid, msg, msgfrom, gid, seq, indb_time)
           SELECT %s, %s, %s, %s, g.last_seq, now() - %s * interval '1 day' FROM g
           RETURNING seq""", (gid, secrets.token_hex(8), body, frm, gid, ago_days))
    return seq


def received(server, to: str) -> list[tuple[str, int]]:
    return server.sql("SELECT msg, received FROM tp_im_message WHERE msgto = %s ORDER BY to_seq",
                      (to,))


def bodies(result: dict) -> list[str]:
    return [r["body"] for r in rows(result)]


def group_points(server, gid: str, uid: str) -> tuple[int, int]:
    """(sync_seq, given_seq) of uid in gid."""
    return server.sql("SELECT sync_seq, given_seq FROM tp_im_group_peer WHERE gid = %s AND userid = %s",
                      (gid, uid))[0]


# --- 1:1 offline ----------------------------------------------------------------------

def test_jack_fetches_offline_messages_and_marks_only_what_he_was_given(server, make_users):
    jack, rose = make_users(2)
    sent = [store_message(server, rose, jack, f"hello {i}") for i in range(3)]
    http = api(server, jack)

    result = http.qid("QID_IM_GET_OFFLINE_MSG")
    assert result["type"] == "table" and result["more"] == "0"
    got = rows(result)
    assert [list(r) for r in got] == [["msgid", "from", "from_res", "to", "time", "type", "body",
                                       "seq"]] * 3
    assert [(r["msgid"], r["from"], r["from_res"], r["to"], r["type"], r["body"], r["seq"])
            for r in got] == [(m["msgid"], rose, "android", jack, "0", m["body"], str(m["to_seq"]))
                              for m in sent]
    assert datetime.strptime(got[0]["time"], "%Y-%m-%d %H:%M:%S")

    # rose's fourth message arrives after the fetch: marking everything leaves it unreceived
    store_message(server, rose, jack, "are you there?")
    assert http.qid("QID_IM_RECIVE_OFFLINE_MSG", seq=999)["result"] == "1"
    assert received(server, jack) == [("hello 0", 1), ("hello 1", 1), ("hello 2", 1),
                                      ("are you there?", 0)]
    assert bodies(http.qid("QID_IM_GET_OFFLINE_MSG")) == ["are you there?"]

    # marking by time: everything stored at or before now, that he was given
    now = (datetime.now(timezone.utc) + timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert http.qid("QID_IM_RECIVE_OFFLINE_MSG", time=now)["result"] == "1"
    assert bodies(http.qid("QID_IM_GET_OFFLINE_MSG")) == []


def test_offline_messages_come_in_pages(server, make_users):
    jack, rose = make_users(2)
    for i in range(5):
        store_message(server, rose, jack, f"m{i}")
    http = api(server, jack)
    first = http.qid("QID_IM_GET_OFFLINE_MSG", limit=2)
    assert (bodies(first), first["more"]) == (["m0", "m1"], "1")
    http.qid("QID_IM_RECIVE_OFFLINE_MSG", seq=rows(first)[-1]["seq"])
    second = http.qid("QID_IM_GET_OFFLINE_MSG", limit="2")
    assert (bodies(second), second["more"]) == (["m2", "m3"], "1")
    # a mark past the page stops at the page's end
    http.qid("QID_IM_RECIVE_OFFLINE_MSG", seq=5)
    last = http.qid("QID_IM_GET_OFFLINE_MSG", limit=2)
    assert (bodies(last), last["more"]) == (["m4"], "0")


def test_a_device_syncs_its_whole_mailbox_after_its_cursor(server, make_users):
    jack, rose = make_users(2)
    store_message(server, rose, jack, "hi jack")
    store_message(server, jack, rose, "hi rose")
    store_message(server, jack, jack, "note to self")
    store_message(server, rose, jack, "lunch?")
    http = api(server, jack)

    everything = rows(http.qid("QID_IM_GET_OFFLINE_MSG", after_seq=0))
    assert [(r["from"], r["to"], r["body"], r["seq"]) for r in everything] == [
        (rose, jack, "hi jack", "1"), (jack, rose, "hi rose", "2"),
        (jack, jack, "note to self", "3"), (rose, jack, "lunch?", "4")]
    later = http.qid("QID_IM_GET_OFFLINE_MSG", after_seq="2", limit=1)
    assert (bodies(later), later["more"]) == (["note to self"], "1")
    # the cursor sync reads, it does not mark
    assert [flag for _, flag in received(server, jack)] == [0, 0, 0]
    # rose's mailbox has her own numbering
    assert [(r["body"], r["seq"]) for r in rows(api(server, rose).qid(
        "QID_IM_GET_OFFLINE_MSG", after_seq=0))] == [("hi jack", "1"), ("hi rose", "2"),
                                                     ("lunch?", "3")]
    assert server.sql("SELECT given_seq FROM im_mailbox WHERE uid = %s", (jack,)) == [(4,)]


@pytest.mark.parametrize("qid,field,params", [
    ("QID_IM_GET_OFFLINE_MSG", "limit", {"limit": 0}),
    ("QID_IM_GET_OFFLINE_MSG", "limit", {"limit": 5001}),
    ("QID_IM_GET_OFFLINE_MSG", "limit", {"limit": "ten"}),
    ("QID_IM_GET_OFFLINE_MSG", "after_seq", {"after_seq": -1}),
    ("QID_IM_GET_OFFLINE_MSG", "after_seq", {"after_seq": [1]}),
    ("QID_IM_RECIVE_OFFLINE_MSG", "seq", {}),
    ("QID_IM_RECIVE_OFFLINE_MSG", "seq", {"seq": "last"}),
    ("QID_IM_RECIVE_OFFLINE_MSG", "time", {"time": "yesterday"}),
    ("QID_IM_GET_ROSTER_MSG_HISTORY", "msgto", {}),
    ("QID_IM_GET_ROSTER_MSG_HISTORY", "days", {"msgto": "rose", "days": 0}),
    ("QID_IM_GET_ROSTER_MSG_HISTORY", "before_seq", {"msgto": "rose", "before_seq": "x"}),
    ("QID_IM_GET_ROSTER_MSG_HISTORY", "limit", {"msgto": "rose", "limit": 1001}),
    ("QID_IM_GET_GROUP_OFFLINE_MSG", "limit", {"limit": 5001}),
    ("QID_IM_GET_GROUP_OFFLINE_MSG", "gid", {"gid": "g" * 51}),
    ("QID_IM_RECIVE_GROUP_OFFLINE_MSG", "seq", {}),
    ("QID_IM_RECIVE_GROUP_OFFLINE_MSG", "gid", {"seq": 3}),
    ("QID_IM_RECIVE_GROUP_OFFLINE_MSG", "time", {"time": "2015-02-30 16:14:00"}),
    ("QID_IM_GET_GROUP_MSG_HISTORY", "gid", {}),
    ("QID_IM_GET_GROUP_MSG_HISTORY", "limit", {"gid": "1", "limit": 0}),
])
def test_bad_parameters_are_named(server, make_users, qid, field, params):
    jack, = make_users(1)
    refused(api(server, jack), qid, 400, "bad_request", field, **params)


def test_what_rose_sends_over_tcp_jack_fetches_and_marks_over_http(server, make_users, connect):
    jack, rose = make_users(2)
    rose_phone = connect(rose, res="android")
    acks = [rose_phone.message(jack, f"while you were out {i}") for i in range(2)]
    http = api(server, jack)
    fetched = rows(http.qid("QID_IM_GET_OFFLINE_MSG"))
    assert [(r["body"], r["from_res"], r["time"], r["seq"]) for r in fetched] == [
        (f"while you were out {i}", "android", ack["time"], str(i + 1)) for i, ack in enumerate(acks)]

    # jack comes online: a live delivery counts as given, so his mark covers it
    jack_pc = connect(jack, res="pc")
    rose_phone.message(jack, "welcome back")
    _, live = jack_pc.wait(protocol.IM_MESSAGE, timeout=5, body="welcome back")
    http.qid("QID_IM_RECIVE_OFFLINE_MSG", seq=live["seq"])
    assert bodies(http.qid("QID_IM_GET_OFFLINE_MSG")) == []
    assert [r["body"] for r in rows(http.qid("QID_IM_GET_ROSTER_MSG_HISTORY", msgto=rose))] == [
        "while you were out 0", "while you were out 1", "welcome back"]

    # and a group jack created over HTTP keeps its messages in its own stream
    gid = http.qid("QID_IM_SET_GROUP", gname="team")["result"]
    for text in ("standup?", "in 5"):
        jack_pc.message(gid, text, group=True)
    history = rows(http.qid("QID_IM_GET_GROUP_MSG_HISTORY", gid=gid))
    assert [(r["from"], r["to"], r["body"], r["seq"]) for r in history] == [
        (jack, gid, "standup?", "1"), (jack, gid, "in 5", "2")]


def test_pages_write_times_in_the_configured_timezone_as_the_tcp_path_does(make_server, make_users,
                                                                             connect):
    srv = make_server(timezone="Asia/Kolkata")  # UTC+05:30: a half-hour offset
    jack, rose = make_users(2, srv=srv)
    acks = [connect(rose, srv=srv).message(jack, f"namaste {i}") for i in range(2)]
    stored = srv.sql("SELECT to_char(indb_time AT TIME ZONE 'Asia/Kolkata', 'YYYY-MM-DD HH24:MI:SS') "
                     "FROM tp_im_message WHERE msgto = %s ORDER BY to_seq", (jack,))
    http = api(srv, jack)
    for page in (http.qid("QID_IM_GET_OFFLINE_MSG"), http.qid("QID_IM_GET_OFFLINE_MSG", after_seq=0),
                 http.qid("QID_IM_GET_ROSTER_MSG_HISTORY", msgto=rose)):
        assert [r["time"] for r in rows(page)] == [a["time"] for a in acks] == [t for t, in stored]
    gid = make_group(srv, {jack: 0, rose: 0})
    group_acks = [connect(rose, srv=srv).message(gid, f"namaste all {i}", group=True) for i in range(2)]
    for page in (http.qid("QID_IM_GET_GROUP_MSG_HISTORY", gid=gid), http.qid("QID_IM_GET_GROUP_OFFLINE_MSG")):
        assert [(r["body"], r["time"]) for r in rows(page)] == [(f"namaste all {i}", a["time"])
                                                                for i, a in enumerate(group_acks)]


# --- 1:1 history ----------------------------------------------------------------------

def test_history_shows_both_directions_of_jacks_own_conversation_only(server, make_users):
    jack, rose, tom = make_users(3)
    store_message(server, rose, jack, "old news", ago_days=20)
    for i in range(5):
        store_message(server, *((rose, jack) if i % 2 else (jack, rose)), f"line {i}")
    store_message(server, tom, jack, "hi jack, it's tom")
    http = api(server, jack)

    newest = http.qid("QID_IM_GET_ROSTER_MSG_HISTORY", msgto=rose, limit=3)
    assert (bodies(newest), newest["more"]) == (["line 2", "line 3", "line 4"], "1")
    assert [r["from"] for r in rows(newest)] == [jack, rose, jack]
    older = http.qid("QID_IM_GET_ROSTER_MSG_HISTORY", msgto=rose, limit=3,
                     before_seq=rows(newest)[0]["seq"])
    assert (bodies(older), older["more"]) == (["line 0", "line 1"], "0")
    assert bodies(http.qid("QID_IM_GET_ROSTER_MSG_HISTORY", msgto=rose, days=30))[0] == "old news"
    # each side sees its own mailbox positions
    rose_view = rows(api(server, rose).qid("QID_IM_GET_ROSTER_MSG_HISTORY", msgto=jack))
    assert [(r["body"], r["seq"]) for r in rose_view] == [(f"line {i}", str(i + 2))
                                                          for i in range(5)]
    # tom asking about rose sees nothing of jack's conversation with her
    assert bodies(api(server, tom).qid("QID_IM_GET_ROSTER_MSG_HISTORY", msgto=rose)) == []
    assert bodies(api(server, tom).qid("QID_IM_GET_ROSTER_MSG_HISTORY", msgto=jack)) == [
        "hi jack, it's tom"]


# --- groups ---------------------------------------------------------------------------

def test_group_offline_messages_start_after_the_sync_point_and_never_before_joining(
        server, make_users):
    jack, rose, tom = make_users(3)
    gid = make_group(server, {jack: 0, rose: 0})
    for i in range(2):
        store_group_message(server, gid, rose, f"before tom {i}")
    server.sql("INSERT INTO tp_im_group_peer (gid, userid, join_seq) VALUES (%s, %s, 2)", (gid, tom))
    store_group_message(server, gid, tom, "hello all")
    jack_api, tom_api = api(server, jack), api(server, tom)

    result = jack_api.qid("QID_IM_GET_GROUP_OFFLINE_MSG")
    got = rows(result)
    assert result["more"] == "0" and list(got[0]) == ["msgid", "from", "to", "time", "body", "seq"]
    assert [(r["from"], r["to"], r["body"], r["seq"]) for r in got] == [
        (rose, gid, "before tom 0", "1"), (rose, gid, "before tom 1", "2"),
        (tom, gid, "hello all", "3")]
    assert group_points(server, gid, jack) == (0, 3)
    assert bodies(tom_api.qid("QID_IM_GET_GROUP_OFFLINE_MSG", gid=gid)) == ["hello all"]
    assert bodies(tom_api.qid("QID_IM_GET_GROUP_MSG_HISTORY", gid=gid)) == ["hello all"]

    # jack marks up to 2, then a new message arrives: marking "all" stops at what he was given
    assert jack_api.qid("QID_IM_RECIVE_GROUP_OFFLINE_MSG", gid=gid, seq=2)["result"] == "1"
    store_group_message(server, gid, rose, "after the fetch")
    jack_api.qid("QID_IM_RECIVE_GROUP_OFFLINE_MSG", gid=gid, seq=99)
    assert group_points(server, gid, jack) == (3, 3)
    # never backwards
    jack_api.qid("QID_IM_RECIVE_GROUP_OFFLINE_MSG", gid=gid, seq=1)
    assert bodies(jack_api.qid("QID_IM_GET_GROUP_OFFLINE_MSG", gid=gid)) == ["after the fetch"]
    assert group_points(server, gid, jack) == (3, 4)


def test_group_offline_covers_every_group_in_pages(server, make_users):
    jack, rose = make_users(2)
    first, second = sorted([make_group(server, {jack: 0, rose: 0}) for _ in range(2)])
    for gid in (second, first):
        for i in range(2):
            store_group_message(server, gid, rose, f"{gid} {i}")
    http = api(server, jack)
    page = http.qid("QID_IM_GET_GROUP_OFFLINE_MSG", limit=3)
    assert (bodies(page), page["more"]) == ([f"{first} 0", f"{first} 1", f"{second} 0"], "1")
    assert (group_points(server, first, jack), group_points(server, second, jack)) == ((0, 2), (0, 1))


def test_marking_groups_by_time_syncs_each_to_its_last_message_given(server, make_users):
    jack, rose = make_users(2)
    old, new = make_group(server, {jack: 0, rose: 0}), make_group(server, {jack: 0, rose: 0})
    store_group_message(server, old, rose, "yesterday", ago_days=1)
    store_group_message(server, old, rose, "today")
    store_group_message(server, new, rose, "today too")
    http = api(server, jack)
    assert len(rows(http.qid("QID_IM_GET_GROUP_OFFLINE_MSG"))) == 3
    store_group_message(server, new, rose, "not fetched yet")

    mark = datetime.now(timezone.utc) - timedelta(hours=1)
    http.qid("QID_IM_RECIVE_GROUP_OFFLINE_MSG", time=mark.strftime("%Y-%m-%d %H:%M:%S"))
    assert (group_points(server, old, jack), group_points(server, new, jack)) == ((1, 2), (0, 1))
    later = (datetime.now(timezone.utc) + timedelta(seconds=2)).strftime("%Y-%m-%d %H:%M:%S")
    http.qid("QID_IM_RECIVE_GROUP_OFFLINE_MSG", time=later)
    assert (group_points(server, old, jack), group_points(server, new, jack)) == ((2, 2), (1, 1))
    assert server.sql("SELECT to_char(update_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
                      "FROM tp_im_roster WHERE userid = %s", (jack,)) == [(later,)]
    assert bodies(http.qid("QID_IM_GET_GROUP_OFFLINE_MSG")) == ["not fetched yet"]


def test_group_history_pages_back_for_members_only(server, make_users):
    jack, rose, tom = make_users(3)
    gid = make_group(server, {jack: 0, rose: 0})
    store_group_message(server, gid, rose, "long ago", ago_days=20)
    for i in range(4):
        store_group_message(server, gid, jack if i % 2 else rose, f"line {i}")
    http = api(server, jack)
    newest = http.qid("QID_IM_GET_GROUP_MSG_HISTORY", gid=gid, limit=3)
    assert (bodies(newest), newest["more"]) == (["line 1", "line 2", "line 3"], "1")
    older = http.qid("QID_IM_GET_GROUP_MSG_HISTORY", gid=gid, before_seq=rows(newest)[0]["seq"])
    assert (bodies(older), older["more"]) == (["line 0"], "0")
    assert bodies(http.qid("QID_IM_GET_GROUP_MSG_HISTORY", gid=gid, days=21))[0] == "long ago"

    outsider = api(server, tom)
    for qid, params in (("QID_IM_GET_GROUP_MSG_HISTORY", {}), ("QID_IM_GET_GROUP_OFFLINE_MSG", {}),
                        ("QID_IM_RECIVE_GROUP_OFFLINE_MSG", {"seq": 1})):
        refused(outsider, qid, 403, "not_member", gid=gid, **params)
        refused(outsider, qid, 404, "no_such_group", gid=gid + "x", **params)
    assert bodies(outsider.qid("QID_IM_GET_GROUP_OFFLINE_MSG")) == []
    server.sql("UPDATE tp_im_group SET dismissed = true WHERE gid = %s", (gid,))
    refused(http, "QID_IM_GET_GROUP_MSG_HISTORY", 404, "no_such_group", gid=gid)
    assert bodies(http.qid("QID_IM_GET_GROUP_OFFLINE_MSG")) == []


def test_history_qids_need_a_token(server):
    assert_needs_token(server, HISTORY_QIDS)


def test_prepared_reads_are_prepared_again_on_new_database_sessions(make_server, make_users):
    """The token check and the 1:1 reads are PREPAREd per pooled connection: once PostgreSQL
    has dropped the server's sessions, their replacements prepare them again and answer the
    same (at worst `unavailable` while the dead ones are found)."""
    srv = make_server(token_cache_s=0)  # every request checks its token in the database
    jack, rose = make_users(2, srv=srv)
    for i in range(3):
        store_message(srv, jack, rose, f"line {i}")
    http = api(srv, rose)

    def reads() -> tuple[list[str], ...]:
        return (bodies(http.qid("QID_IM_GET_OFFLINE_MSG")),
                bodies(http.qid("QID_IM_GET_OFFLINE_MSG", after_seq=1)),
                bodies(http.qid("QID_IM_GET_ROSTER_MSG_HISTORY", msgto=jack)))

    lines = ["line 0", "line 1", "line 2"]
    for _ in range(7):  # past the fifth execution: the generic plans
        assert reads() == (lines, lines[1:], lines)
    srv.sql("""SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE datname = current_database() AND application_name = 'im'""")
    deadline = time.monotonic() + 5
    while True:
        try:
            assert reads() == (lines, lines[1:], lines)
            break
        except HttpError as err:
            assert err.code == "unavailable" and time.monotonic() < deadline
    assert srv.sql("""SELECT count(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND application_name = 'im'""")[0][0] > 0


# --- every query walks an index -------------------------------------------------------

class ExplainingCursor(psycopg2.extensions.cursor):
    """Runs EXPLAIN before each statement (a PREPARE excepted: its EXECUTE is explained) and
    keeps the plans."""
    plans: list[tuple[str, str]] = []

    def execute(self, query, vars=None):
        if query.startswith("PREPARE "):
            return super().execute(query, vars)
        super().execute("EXPLAIN " + query, vars)
        self.plans.append((query, "\n".join(r[0] for r in self.fetchall())))
        return super().execute(query, vars)


FILL = """
INSERT INTO im_mailbox (uid, last_seq, given_seq) SELECT 'u' || i, 100000, 100000
    FROM generate_series(0, 199) i;
INSERT INTO tp_im_message (msgid, msg, msgfrom, msgto, from_seq, to_seq, received, indb_time)
    SELECT 'm' || i, 'x', 'u' || (i % 200), 'u' || ((i * 7 + 1) % 200), i, i, (i % 3 > 0)::int,
           now() - (30000 - i) * interval '1 minute'
    FROM generate_series(1, 30000) i;
INSERT INTO tp_im_group (gid, gname, userid, last_seq)
    SELECT 'g' || k, 'g', 'u0', 30000 FROM generate_series(0, 49) k;
INSERT INTO tp_im_group_peer (gid, userid, join_seq, sync_seq, given_seq)
    SELECT 'g' || (i % 50), 'u' || i, i % 7, 20000, 30000 FROM generate_series(0, 199) i;
INSERT INTO tp_im_message_group (msgid, msg, msgfrom, gid, seq, indb_time)
    SELECT 'm' || i, 'x', 'u' || (i % 200), 'g' || (i % 50), i,
           now() - (30000 - i) * interval '1 minute'
    FROM generate_series(1, 30000) i;
ANALYZE;
"""


def test_every_message_query_uses_an_index(postgres):
    conn = psycopg2.connect(postgres.create_database(), connection_factory=db.Connection)
    try:
        with conn.cursor() as cur:
            cur.execute(SCHEMA_FILE.read_text(encoding="utf-8"))
            cur.execute(FILL)
            # prepared statements are explained with the plan they keep after five executions
            cur.execute("SET plan_cache_mode = force_generic_plan")
        conn.commit()
        ExplainingCursor.plans = []
        with conn.cursor(cursor_factory=ExplainingCursor) as cur:
            run_every_query(cur)
        conn.rollback()
    finally:
        conn.close()
    assert len(ExplainingCursor.plans) >= 12
    for query, plan in ExplainingCursor.plans:
        assert "Seq Scan on tp_im_message" not in plan, f"{query}\n{plan}"


def run_every_query(cur) -> None:
    now = datetime.now(timezone.utc)
    history.unreceived(cur, "u5", 500, "UTC")
    history.mailbox_after(cur, "u5", 100, 500, "UTC")
    history.mark_received_upto(cur, "u5", 20000)
    history.mark_received_before(cur, "u5", now)
    history.conversation(cur, "u5", "u36", 2 ** 63 - 1, 14, 101, "UTC")
    history.membership(cur, "g5", "u5")
    history.group_unsynced(cur, "u5", None, 500, "UTC")
    history.group_unsynced(cur, "u5", "g5", 500, "UTC")
    history.group_mark_seq(cur, "u5", "g5", 25000)
    history.group_mark_before(cur, "u5", now, now, None)
    history.group_history(cur, "u5", "g5", 2 ** 63 - 1, 14, 101, "UTC")
    pending.pending(cur, "u5", 501)
