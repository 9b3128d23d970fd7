"""The HTTP API alone under gunicorn's gevent workers, as deployed beside `im tcp`."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from im.client import Http
from support import ADMIN_KEY

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")


def start_gunicorn(database_url: str, workdir: Path) -> tuple[subprocess.Popen, Path, int]:
    """gunicorn with two gevent workers on a free port, once it answers /readyz: (process, log, port)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IM_")}
    env.update(IM_DATABASE_URL=database_url, IM_HTTP_HOST="127.0.0.1", IM_HTTP_PORT="0",
               IM_ADMIN_KEY=ADMIN_KEY, IM_KDF_COST="10", IM_DATA_DIR=str(workdir),
               IM_CONFIG=str(workdir / "im.toml"), WEB_CONCURRENCY="2", PYTHONPATH=str(ROOT))
    (workdir / "im.toml").write_text("")
    log = workdir / "gunicorn.log"
    gunicorn = Path(sys.executable).with_name("gunicorn")
    proc = subprocess.Popen([str(gunicorn), "-c", str(ROOT / "etc/gunicorn.conf.py"), "wsgi:app"],
                            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = LISTENING.search(log.read_text(errors="replace"))
        if found:
            _wait_ready(Http(f"http://127.0.0.1:{found.group(1)}"), log)
            return proc, log, int(found.group(1))
        assert proc.poll() is None, log.read_text(errors="replace")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("gunicorn did not start: " + log.read_text(errors="replace"))


def _wait_ready(http: Http, log: Path) -> None:
    deadline = time.monotonic() + 30  # workers open their pools after fork
    while http.call("GET", "/readyz")[0] != 200:
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.2)


def test_gunicorn_serves_login_and_qids(server, make_users, tmp_path):
    jack, = make_users(1)
    proc, log, port = start_gunicorn(server.database_url, tmp_path)
    try:
        http = Http(f"http://127.0.0.1:{port}")
        token = http.login(jack, "pw")
        status, body, _ = http.call("POST", "/api/QID_IM_GET_ROSTER_ALL", {})
        assert status == 200 and body["type"] == "text", body
        status, body, _ = http.call("POST", "/api/QID_NO_SUCH_THING", {})
        assert status == 404 and body["code"] == "not_found"
        assert http.call("POST", "/api/login", {"uid": jack, "pwd": "bad"})[0] == 401
        assert token
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
