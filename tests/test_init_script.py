"""etc/init.d/im run against a temporary prefix (no root, no systemd): start, status, reload,
stop and their LSB exit codes; plus a sanity check of the other shipped operations files."""

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

from im import protocol
from im.client import Client
from support import ADMIN_KEY, PASSWORD

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "etc/init.d/im"
LISTENING = re.compile(r"im: listening: TCP on 127\.0\.0\.1:(\d+)")


def init(env: dict, action: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(SCRIPT), action], env=env, capture_output=True, text=True,
                          timeout=90)


def test_init_script_start_status_reload_stop(server, make_users, tmp_path):
    jack, = make_users(1)
    conf = tmp_path / "im.toml"
    conf.write_text(f'database_url = "{server.database_url}"\ndata_dir = "{tmp_path}/var"\n'
                    'tcp_host = "127.0.0.1"\nhttp_host = "127.0.0.1"\ntcp_port = 0\nhttp_port = 0\n'
                    f'admin_key = "{ADMIN_KEY}"\nkdf_cost = 10\nshutdown_timeout_s = 3\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("IM_")}
    env.update(IM_PREFIX=str(tmp_path), IM_DEFAULTS="/nonexistent", IM_RUN_AS="",
               IM_BIN=str(Path(sys.executable).with_name("im")), IM_CONFIG_FILE=str(conf),
               IM_RUNDIR=str(tmp_path / "run"), IM_LOGDIR=str(tmp_path / "log"))
    pidfile = tmp_path / "run/im.pid"
    assert init(env, "status").returncode == 3

    started = init(env, "start")
    try:
        assert started.returncode == 0, started.stdout + (tmp_path / "log/im.out").read_text()
        pid = int(pidfile.read_text())
        assert init(env, "start").returncode == 0 and int(pidfile.read_text()) == pid
        assert init(env, "status").returncode == 0

        port = int(LISTENING.search((tmp_path / "log/im.out").read_text()).group(1))
        client = Client("127.0.0.1", port)
        client.login(jack, PASSWORD, res="pc")
        assert init(env, "reload").returncode == 0
        assert client.heartbeat()["time"]

        assert init(env, "stop").returncode == 0
        assert client.wait(protocol.IM_NOTIFY_KICK, 5)[1] == {"reason": "shutdown"}
        assert init(env, "status").returncode == 3 and not pidfile.exists()
        assert init(env, "stop").returncode == 0
        assert init(env, "reload").returncode == 7
    finally:
        init(env, "stop")

    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    assert init(env, "status").returncode == 1
    assert init(env, "stop").returncode == 0 and init(env, "status").returncode == 3


def test_shipped_scripts_parse_and_units_say_what_operations_need():
    for script in ("etc/init.d/im", "scripts/install.sh", "scripts/backup.sh", "scripts/restore.sh"):
        assert subprocess.run(["sh" if script.startswith("etc") else "bash", "-n", str(ROOT / script)]).returncode == 0
    for unit in ("im-tcp", "im-http"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read(ROOT / f"etc/systemd/{unit}.service")
        service = parser["Service"]
        assert service["User"] == "im" and service["LimitNOFILE"] == "200000"
        assert service["Restart"] == "on-failure" and "kill -HUP" in service["ExecReload"]
        assert int(service["TimeoutStopSec"]) > 10
    assert "copytruncate" in (ROOT / "etc/logrotate.d/im").read_text()
