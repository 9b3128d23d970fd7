"""Backups: scripts/backup.sh, wipe the database and the files, scripts/restore.sh — and the
conversation, the users and the uploaded files are there again."""

import shutil
import subprocess
import sys
from pathlib import Path

import psycopg2
import psycopg2.extensions

from im.client import Client

ROOT = Path(__file__).resolve().parent.parent


def run_script(srv, name: str, *args: str) -> str:
    env = {**srv.env(), "IM_PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "scripts" / name), *args], cwd=srv.workdir, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def recreate_database(admin_url: str, database_url: str) -> None:
    name = psycopg2.extensions.parse_dsn(database_url)["dbname"]
    conn = psycopg2.connect(admin_url)
    conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE {name} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()


def test_backup_wipe_restore_brings_everything_back(postgres, make_server, make_users, tmp_path):
    srv = make_server()
    jack, rose = make_users(2, srv=srv)
    for seq, text in enumerate(("hello rose", "are you there?"), start=1):
        srv.sql("INSERT INTO tp_im_message (msgid, msg, msgfrom, msgto, from_seq, to_seq)"
                " VALUES (%s, %s, %s, %s, %s, %s)", (f"m{seq}", text, jack, rose, seq, seq))
    files = Path(srv.workdir) / "files"
    files.mkdir(exist_ok=True)
    (files / "3f2b9c0e6d1a4b7f8e21.jpg").write_bytes(b"\xff\xd8 picture")

    backup = run_script(srv, "backup.sh", str(tmp_path / "backups")).strip().splitlines()[-1]
    assert (Path(backup) / "db.dump").stat().st_size > 0
    srv.stop()
    recreate_database(postgres.admin_url, srv.database_url)
    shutil.rmtree(files)
    assert srv.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'tp_im_message'") == [(0,)]

    run_script(srv, "restore.sh", "-y", backup)
    assert srv.sql("SELECT msgid, msg FROM tp_im_message WHERE msgfrom = %s ORDER BY from_seq",
                   (jack,)) == [("m1", "hello rose"), ("m2", "are you there?")]
    assert (files / "3f2b9c0e6d1a4b7f8e21.jpg").read_bytes() == b"\xff\xd8 picture"
    srv.start()
    with Client("127.0.0.1", srv.tcp_port) as client:
        assert client.login(rose, "pw", res="pc")


def test_restore_refuses_without_confirmation(server, tmp_path):
    (tmp_path / "db.dump").write_bytes(b"")
    done = subprocess.run(["bash", str(ROOT / "scripts/restore.sh"), str(tmp_path)],
                          env={**server.env(), "IM_PYTHON": sys.executable}, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 1 and "-y" in done.stderr
