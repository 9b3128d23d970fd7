"""Operations: health, readiness, metrics, `im online` / `im status` / `im check-config`,
graceful SIGTERM and live SIGHUP reload — observed from outside, as a sysadmin would."""

import os
import signal
import socket
import subprocess
import sys
import time

import pgserver
import pytest
from pgserver._commands import pg_ctl
from prometheus_client.parser import text_string_to_metric_families

from im import protocol
from im.client import Http, RequestFailed
from support import ImServer, short_tmpdir


def scrape(base_url: str) -> dict:
    """{(sample name, sorted label items): value} of GET /metrics."""
    status, body, headers = Http(base_url).call("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def im_command(srv: ImServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "im.cli", *args], cwd=srv.workdir, env=srv.env(),
                          capture_output=True, text=True, timeout=30)


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_health_readiness_and_metrics_count_logins(server, make_users, connect):
    jack, = make_users(1)
    http = server.http()
    assert http.call("GET", "/healthz")[:2] == (200, {"status": "ok"})
    assert http.call("GET", "/readyz")[:2] == (200, {"status": "ready", "database": "ok", "router": "ok"})
    before = scrape(server.base_url)
    with pytest.raises(RequestFailed):
        server.client().login(jack, "wrong")
    client = connect(jack, res="android")
    client.heartbeat()
    client.message(jack, "a note to myself")
    after = scrape(server.base_url)

    def grew(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("im_logins_total", method="password") >= 1
    assert grew("im_login_failures_total") >= 1
    assert grew("im_connections_opened_total") >= 2
    assert grew("im_frames_total", direction="in", type="IM_HEARTBEAT") >= 1
    assert grew("im_frames_total", direction="out", type="IM_NOTIFY_KICK") == 0
    assert grew("im_handler_seconds_count", type="IM_LOGIN") >= 2
    assert grew("im_messages_stored_total", kind="chat") >= 1
    assert grew("im_message_ack_latency_seconds_count") >= 1
    assert after[("im_sessions", ())] >= 1 and after[("im_online_users", ())] >= 1
    assert after[("im_db_pool_size", ())] >= 1


def test_im_online_and_status_ask_the_running_server(server, make_users, connect):
    jack, rose = make_users(2)
    connect(jack, res="android")
    connect(rose, res="pc")
    online = im_command(server, "online", "--url", server.base_url)
    assert online.returncode == 0, online.stderr
    assert f"{jack}\tandroid\t127.0.0.1\t" in online.stdout and f"{rose}\tpc\t" in online.stdout
    status = im_command(server, "status", "--url", server.base_url)
    assert status.returncode == 0, status.stderr
    assert "version: 0.1.0" in status.stdout and "ready: True" in status.stdout
    assert f"tcp_port: {server.tcp_port}" in status.stdout
    nobody = im_command(server, "status", "--url", f"http://127.0.0.1:{free_port()}")
    assert nobody.returncode == 3 and "no server answers" in nobody.stderr


def test_ops_status_is_for_admins_only(server, make_users):
    jack, = make_users(1)
    token = server.http().login(jack, "pw")
    assert server.http(token).call("GET", "/ops/sessions")[0] == 401  # a user token is no admin key
    assert server.http("wrong-key").call("GET", "/ops/status")[0] == 401


def test_check_config_rejects_a_bad_key_by_name(tmp_path):
    for line, name in (("max_body_charz = 5", "max_body_charz"), ('idle_timeout_s = "soon"', "idle_timeout_s")):
        path = tmp_path / "im.toml"
        path.write_text(line + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("IM_")}
        done = subprocess.run([sys.executable, "-m", "im.cli", "--config", str(path), "check-config"],
                              env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and name in done.stderr
    path.write_text("max_body_chars = 5\n")
    done = subprocess.run([sys.executable, "-m", "im.cli", "--config", str(path), "check-config"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "max_body_chars = 5" in done.stdout


def test_sigterm_kicks_every_client_and_exits_zero_in_time(make_server, make_users, connect):
    srv = make_server(shutdown_timeout_s=3)
    clients = [connect(uid, srv=srv) for uid in make_users(3, srv=srv)]
    started = time.monotonic()
    assert srv.stop(timeout=10) == 0
    assert time.monotonic() - started < 3 + 2
    for client in clients:
        assert client.wait(protocol.IM_NOTIFY_KICK, 5)[1] == {"reason": "shutdown"}
        client.wait_closed(5)


def test_sighup_changes_log_level_without_dropping_connections(postgres, tmp_path, make_users, connect):
    conf = tmp_path / "im.toml"
    conf.write_text('log_level = "INFO"\n')
    srv = ImServer(postgres.create_database(), config=str(conf))
    del srv.config["log_level"]  # the file decides (the environment would win)
    srv.start()
    try:
        rose, jack = make_users(2, srv=srv)
        rose_pc = connect(rose, srv=srv)
        assert f"login uid={rose}" in srv.log_tail(200)
        status = lambda: Http(srv.base_url, srv.config["admin_key"]).call("GET", "/ops/status")[1]  # noqa: E731

        conf.write_text('log_level = "WARNING"\n')
        srv.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: status()["log_level"] == "WARNING", what="log level WARNING")
        connect(jack, srv=srv)
        assert f"login uid={jack}" not in srv.log_tail(200)
        assert rose_pc.heartbeat()["time"]

        conf.write_text('log_level = "WARNING"\nno_such_key = 1\n')
        srv.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in srv.log_tail(200), what="refused reload")
        assert "no_such_key" in srv.log_tail(200)
        assert rose_pc.heartbeat()["time"] and status()["log_level"] == "WARNING"
    finally:
        srv.kill()


def test_readyz_follows_postgres_down_and_up(make_server):
    pg = pgserver.get_server(short_tmpdir("imr"), cleanup_mode="delete")
    try:
        srv = make_server(database_url=pg.get_uri())
        http = srv.http()
        assert http.call("GET", "/readyz")[0] == 200
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pg.pgdata, user=pg.system_user)
        down = wait_until(lambda: (r := http.call("GET", "/readyz"))[0] == 503 and r[1], what="503")
        assert down == {"status": "unavailable", "database": "down", "router": "ok"}
        assert http.call("GET", "/healthz")[0] == 200
        pg.ensure_postgres_running()
        wait_until(lambda: http.call("GET", "/readyz")[0] == 200, what="ready again")
    finally:
        pg.cleanup()


def test_im_tcp_serves_metrics_and_sessions_on_metrics_port(server, make_server, make_users, connect):
    port = free_port()
    tcp = make_server(command="tcp", database_url=server.database_url, metrics_port=port)
    jack, = make_users(1)
    connect(jack, res="ios", srv=tcp)
    base = f"http://127.0.0.1:{port}"
    assert Http(base).call("GET", "/healthz")[0] == 200
    assert scrape(base)[("im_sessions", ())] == 1
    online = im_command(tcp, "online")  # finds the port through the configuration
    assert online.returncode == 0, online.stderr
    assert f"{jack}\tios\t" in online.stdout and "1 users, 1 connections" in online.stdout
    assert Http(base).call("GET", "/api/login", {})[0] == 404
