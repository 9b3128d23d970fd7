"""The `im` command on the server host (PROTOCOL.md §4, §5): initdb and user management
against the database of a running server, whose sessions feel the effects at once."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

from support import ImServer

PW = "pw"


def im(*args: str, database_url: str, stdin: str | None = None, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IM_")}
    clean.update({"IM_DATABASE_URL": database_url, "IM_KDF_COST": "10"},
                 **{f"IM_{k.upper()}": v for k, v in env.items()})
    return subprocess.run([sys.executable, "-m", "im.cli", *args], env=clean, input=stdin,
                          capture_output=True, text=True, timeout=60, cwd=os.path.dirname(__file__))


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_initdb_twice_is_idempotent(postgres):
    url = postgres.create_database()
    assert "schema ready (version 1)" in ok(im("initdb", database_url=url))
    assert "schema ready (version 1)" in ok(im("initdb", database_url=url))
    import psycopg2
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, version FROM schema_version")
            assert cur.fetchall() == [(1, 1)]
            cur.execute("SELECT name, ver FROM im_version ORDER BY name")
            assert cur.fetchall() == [("contacts", 0), ("dept", 0)]
    finally:
        conn.close()


def test_user_add_with_password_flag_or_stdin_then_log_in(server):
    jack, rose = f"jack{secrets.token_hex(4)}", f"rose{secrets.token_hex(4)}"
    url = server.database_url
    assert f"user {jack} created" in ok(im("user", "add", jack, "--password", "s3cret", "--name", "Jack",
                                           database_url=url))
    ok(im("user", "add", rose, database_url=url, stdin="from stdin\n"))
    assert server.client().login(jack, "s3cret", res="pc")["token"]
    assert server.http().login(rose, "from stdin")
    assert server.admin().admin("GET", f"/users/{jack}")["name"] == "Jack"
    listed = ok(im("user", "list", database_url=url)).splitlines()
    assert f"{jack}\tJack\t\t" in listed and f"{rose}\t\t\t" in listed


def test_user_add_refuses_duplicates_and_bad_uids(server, make_users):
    jack, = make_users(1)
    result = im("user", "add", jack, "--password", "x", database_url=server.database_url)
    assert result.returncode == 1 and "exists" in result.stderr
    result = im("user", "add", "system", "--password", "x", database_url=server.database_url)
    assert result.returncode == 1 and "uid" in result.stderr
    result = im("user", "add", "new" + jack, database_url=server.database_url, stdin="")
    assert result.returncode == 1 and "pwd" in result.stderr


def test_passwd_kicks_the_running_sessions(server, make_users, connect):
    jack, = make_users(1)
    pc = connect(jack)
    ok(im("user", "passwd", jack, database_url=server.database_url, stdin="changed\n"))
    frames = pc.wait_closed(timeout=5)
    assert frames == [(0x40005, {"reason": "password_changed"})]
    assert server.http().call("POST", "/api/login", {"uid": jack, "pwd": PW})[0] == 401
    assert server.http().login(jack, "changed")


def test_disable_and_enable(server, make_users, connect):
    jack, = make_users(1)
    pc = connect(jack)
    ok(im("user", "disable", jack, database_url=server.database_url))
    assert pc.wait_closed(timeout=5) == [(0x40005, {"reason": "disabled"})]
    assert server.http().call("POST", "/api/login", {"uid": jack, "pwd": PW})[0] == 403
    assert f"{jack}\t\t\tdisabled" in ok(im("user", "list", database_url=server.database_url))
    ok(im("user", "disable", jack, "--enable", database_url=server.database_url))
    assert server.http().login(jack, PW)


def test_unknown_user_is_an_error(server):
    result = im("user", "passwd", "ghost" + secrets.token_hex(4), "--password", "x",
                database_url=server.database_url)
    assert result.returncode == 1 and "ghost" in result.stderr and "Traceback" not in result.stderr
    result = im("user", "disable", "ghost" + secrets.token_hex(4), database_url=server.database_url)
    assert result.returncode == 1 and "ghost" in result.stderr


def test_serve_with_embedded_postgresql_keeps_its_data(make_users):
    """The newcomer's path: no database_url, `im serve` runs PostgreSQL under data_dir/pg."""
    srv = ImServer("")
    try:
        srv.start(timeout=90)
        assert "embedded PostgreSQL" in srv.log_tail()
        jack, = make_users(1, srv=srv)
        assert srv.client().login(jack, PW)["token"]
        assert srv.stop() == 0
        srv.start(timeout=90)
        assert srv.http().login(jack, PW)
    finally:
        assert srv.stop() == 0
    assert not list(Path(srv.workdir, "pg").glob("postmaster.pid"))  # stopped with the server
