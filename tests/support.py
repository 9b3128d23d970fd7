"""Test support: a PostgreSQL for the session and real `im serve` processes on free ports."""

import atexit
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions

from im.client import Client, Http

ADMIN_KEY = "test-admin-key"
PASSWORD = "pw"
LISTEN_RE = re.compile(r"TCP on [^:]+:(\d+)(?:, HTTP on [^:]+:(\d+))?")


def short_tmpdir(prefix: str) -> str:
    """A short directory under the system temp dir (PostgreSQL's socket path is limited), removed
    when this process exits: after whatever registered its exit handler later (pgserver's stop)."""
    path = tempfile.mkdtemp(prefix=prefix, dir=tempfile.gettempdir())
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


class Postgres:
    """The session's PostgreSQL: IM_TEST_DATABASE_URL, or an embedded one (pgserver)."""

    def __init__(self):
        self.server = None
        self.admin_url = os.environ.get("IM_TEST_DATABASE_URL", "")
        if not self.admin_url:
            import pgserver
            self.server = pgserver.get_server(short_tmpdir("imt"), cleanup_mode="delete")
            self.admin_url = self.server.get_uri()

    def create_database(self) -> str:
        """A fresh database on the server; returns its DSN."""
        name = "im_test_" + secrets.token_hex(4)
        conn = psycopg2.connect(self.admin_url)
        conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        conn.close()
        return psycopg2.extensions.make_dsn(self.admin_url, dbname=name)

    def close(self) -> None:
        if self.server is not None:
            self.server.cleanup()


class ImServer:
    """`im serve` (or `im tcp`) in a subprocess, configured by IM_* variables."""

    def __init__(self, database_url: str, command: str = "serve", **config):
        self.database_url = database_url
        self.command = command
        self.workdir = short_tmpdir("ims")
        self.config = {"admin_key": ADMIN_KEY, "kdf_cost": 6, "data_dir": self.workdir,
                       "database_url": database_url, "tcp_host": "127.0.0.1",
                       "http_host": "127.0.0.1", "log_level": "INFO",
                       "login_failures_per_addr": 0, **config}
        self.proc: subprocess.Popen | None = None
        self.tcp_port = 0
        self.http_port = 0
        self.log_path = Path(self.workdir) / "server.log"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IM_")}
        env.update({f"IM_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in self.config.items()})
        return env

    def start(self, timeout: float = 30.0) -> "ImServer":
        ports = ["--tcp-port", str(self.tcp_port)]
        if self.command == "serve":
            ports += ["--http-port", str(self.http_port)]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "im.cli", self.command, *ports],
                                     cwd=self.workdir, env=self.env(), stdout=subprocess.PIPE,
                                     stderr=log, text=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"server exited: {self.log_tail()}")
            found = LISTEN_RE.search(line)
            if found:
                self.tcp_port = int(found.group(1))
                self.http_port = int(found.group(2) or 0)
                return self
        raise RuntimeError(f"server did not start: {self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc.kill()
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> "ImServer":
        """Stop (if running) and start again on the same ports."""
        if self.proc is not None:
            self.stop()
        return self.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def client(self, **kw) -> Client:
        return Client("127.0.0.1", self.tcp_port, **kw)

    def http(self, token: str = "") -> Http:
        return Http(self.base_url, token)

    def admin(self) -> Http:
        return Http(self.base_url, ADMIN_KEY)

    def sql(self, query: str, args=None) -> list[tuple]:
        """Read the server's database directly (what a test observes as stored)."""
        conn = psycopg2.connect(self.database_url)
        try:
            with conn.cursor() as cur:
                cur.execute(query, args)
                rows = cur.fetchall() if cur.description else []
            conn.commit()
            return rows
        finally:
            conn.close()
