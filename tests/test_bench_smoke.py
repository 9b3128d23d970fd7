"""The benchmark suite runs: every scenario at a tiny size prints its figures (no timed asserts)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"

EXPECTED = {
    "conns": {"connections", "rss_kib_per_conn", "token_logins_per_s", "pwd_logins_per_s",
              "idle_server_cpu_pct"},
    "chat": {"offered_rate", "delivered_per_s", "ack_ms", "e2e_ms", "server_us_cpu_per_msg",
             "postgres_us_cpu_per_msg", "exactly_once", "unreceipted", "driver_bound"},
    "fanout": {"members", "deliveries", "deliveries_per_s", "e2e_ms", "server_us_cpu_per_delivery",
               "driver_bound"},
    "offline": {"stored", "stored_per_s", "fetched", "fetched_per_s", "left_unreceived"},
    "history": {"rows", "history_ms", "offline_ms"},
    "http": {"qid_per_s", "hello_per_s", "ratio"},
    "files": {"upload_mib_s", "download_mib_s", "copy_mib_s", "intact"},
}


@pytest.mark.timeout(150)
def test_every_scenario_prints_its_figures(postgres):
    run = subprocess.run([sys.executable, str(BENCH), "--tiny", "--database-url", postgres.create_database()],
                         capture_output=True, text=True, timeout=140)
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [r["scenario"] for r in results] == list(EXPECTED)
    for r in results:
        assert EXPECTED[r["scenario"]] <= r.keys(), r
    by_name = {r["scenario"]: r for r in results}
    # what a tiny run can still vouch for: everything sent arrived once, was receipted, came back
    assert by_name["conns"]["connections"] == 20
    assert by_name["chat"]["exactly_once"] and by_name["chat"]["unreceipted"] == 0
    assert by_name["fanout"]["deliveries"] == by_name["fanout"]["expected"]
    assert by_name["offline"]["fetched"] == by_name["offline"]["stored"] == 200
    assert by_name["offline"]["left_unreceived"] == 0
    assert by_name["history"]["rows"] == 5000
    assert by_name["files"]["intact"]
    assert "scenario" in run.stdout.split("\n\n")[-1]  # the table follows the JSON lines


@pytest.mark.timeout(90)
def test_chat_with_a_receipt_per_message_leaves_nothing_unreceipted(postgres):
    run = subprocess.run([sys.executable, str(BENCH), "--tiny", "--scenario", "chat", "--receipt-every", "1",
                          "--database-url", postgres.create_database()],
                         capture_output=True, text=True, timeout=80)
    assert run.returncode == 0, run.stderr[-3000:]
    chat, = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert chat["exactly_once"] and chat["messages"] > 0 and chat["unreceipted"] == 0
