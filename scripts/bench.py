#!/usr/bin/env python3
"""Load generator and benchmark suite (issue 7).

Raw sockets and pre-encoded frames, spread over several worker processes so that the driver is
not the bottleneck (each scenario reports the driver's CPU; a driver above 90% of its cores is
marked "driver-bound"). It starts `im serve` itself (embedded PostgreSQL, or --database-url),
creates users through the admin bulk endpoint, and prints one JSON object per scenario, then a
table. Server CPU comes from /proc for the server process and, separately, PostgreSQL's processes.

    python scripts/bench.py --scenario chat --rates 1000,2000,5000 --duration 10
    python scripts/bench.py --scenario all --tiny          # the smoke test's size
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import ADMIN_KEY, PASSWORD, ImServer, Postgres  # noqa: E402

from im import protocol  # noqa: E402
from im.client import Http  # noqa: E402


# --- measurement helpers -----------------------------------------------------------------

def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    values = sorted(values)

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 3)
    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(values[-1], 3)}


class CpuMeter:
    """CPU seconds used by the server process and by PostgreSQL's processes."""

    def __init__(self, server_pid: int, pg_pids_fn):
        self.server = psutil.Process(server_pid)
        self.pg_pids_fn = pg_pids_fn

    def _pg(self) -> float:
        total = 0.0
        for pid in self.pg_pids_fn():
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def sample(self) -> tuple[float, float]:
        t = self.server.cpu_times()
        return t.user + t.system, self._pg()


def postgres_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]


# --- driver workers (separate processes) ---------------------------------------------------

def _gevent_worker():
    from gevent import monkey
    monkey.patch_all(thread=False)  # multiprocessing.Queue needs a real feeder thread


def _login(sock_factory, uid: str, token: str, res: str):
    """A raw socket logged in with a token; returns (socket, decoder)."""
    sock = sock_factory()
    sock.sendall(protocol.encode(protocol.IM_LOGIN, {"msgid": "l", "uid": uid, "token": token, "res": res}))
    dec = protocol.FrameDecoder(1 << 24)
    while True:
        for f in dec.feed(sock.recv(65536)):
            if f.msgtype == protocol.IM_MESSAGE_ACK and f.body.get("type") == str(protocol.IM_LOGIN):
                if "code" in f.body:
                    raise RuntimeError(f"login failed: {f.body}")
                return sock, dec


def chat_worker(args: dict, out: mp.Queue) -> None:
    """Each pair: a sender paced at `rate` msgs/s to a receiver that receipts with `upto`."""
    _gevent_worker()
    import socket

    import gevent

    host, port = args["host"], args["port"]

    def connect():
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    sent_at: dict = {}
    ack_lat, e2e_lat = [], []
    received = {"n": 0, "dups": 0}
    seen: set = set()
    pairs = args["pairs"]
    per_pair = args["rate"] / max(1, args["total_pairs"])
    count = max(1, int(per_pair * args["duration"]))
    done_acks = {"n": 0}
    t0 = time.perf_counter() + 0.5

    def sender(uid: str, token: str, to: str) -> None:
        sock, dec = _login(connect, uid, token, "bench")
        frames = [protocol.encode(protocol.IM_MESSAGE, {"msgid": f"m{i}", "to": to, "type": "0",
                                                        "body": "hello " * 5}) for i in range(count)]

        def read_acks():
            while done_acks["n"] < total_msgs:
                data = sock.recv(65536)
                if not data:
                    return
                now = time.perf_counter()
                for f in dec.feed(data):
                    if f.msgtype == protocol.IM_MESSAGE_ACK and "seq" in f.body:
                        ack_lat.append((now - sent_at[(uid, f.body["msgid"])]) * 1000)
                        done_acks["n"] += 1
        reader = gevent.spawn(read_acks)
        for i, frame in enumerate(frames):
            due = t0 + i / per_pair
            delay = due - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            sent_at[(uid, f"m{i}")] = time.perf_counter()
            sock.sendall(frame)
        reader.join(timeout=args["duration"] + 30)

    def receiver(uid: str, token: str, frm: str) -> None:
        sock, dec = _login(connect, uid, token, "bench")
        last = 0
        got = 0
        while got < count:
            sock.settimeout(args["duration"] + 30)
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            now = time.perf_counter()
            for f in dec.feed(data):
                if f.msgtype != protocol.IM_MESSAGE:
                    continue
                key = (f.body["from"], f.body["msgid"])
                if key in seen:
                    received["dups"] += 1
                    continue
                seen.add(key)
                got += 1
                received["n"] += 1
                e2e_lat.append((now - sent_at[key]) * 1000)
                last = max(last, f.body["seq"])
            if got % 50 == 0 or got == count:
                sock.sendall(protocol.encode(protocol.IM_MESSAGE_ACK, {"type": 196609, "upto": last}))

    total_msgs = count * len(pairs)
    cpu0 = time.process_time()
    jobs = []
    for p in pairs:
        jobs.append(gevent.spawn(receiver, p["to"], p["to_token"], p["from"]))
        jobs.append(gevent.spawn(sender, p["from"], p["from_token"], p["to"]))
    gevent.joinall(jobs, timeout=args["duration"] + 60)
    out.put({"ack": ack_lat, "e2e": e2e_lat, "received": received["n"], "dups": received["dups"],
             "expected": total_msgs, "cpu": time.process_time() - cpu0})


def conns_worker(args: dict, out: mp.Queue) -> None:
    """Open N token-logged-in idle connections from a source address; hold them; report rate."""
    _gevent_worker()
    import socket

    import gevent
    from gevent.pool import Pool

    socks = []

    def connect():
        s = socket.socket()
        s.bind((args["source"], 0))
        s.connect((args["host"], args["port"]))
        return s

    def one(user):
        sock, _ = _login(connect, user["uid"], user["token"], f"r{len(socks)}")
        socks.append(sock)

    pool = Pool(200)
    start = time.perf_counter()
    for user in args["users"]:
        pool.spawn(one, user)
    pool.join()
    elapsed = time.perf_counter() - start
    out.put({"opened": len(socks), "seconds": elapsed})
    gevent.sleep(args["hold"])
    for s in socks:
        s.close()


def run_workers(target, jobs: list[dict]) -> list[dict]:
    out: mp.Queue = mp.Queue()
    procs = [mp.Process(target=target, args=(job, out)) for job in jobs]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return results


# --- scenarios ---------------------------------------------------------------------------

class Bench:
    def __init__(self, opts):
        self.opts = opts
        self.pg = None
        db = opts.database_url
        if not db:
            self.pg = Postgres()
            db = self.pg.create_database()
        config = {"log_level": "WARNING", "max_outbox_frames": 100000}
        self.server = ImServer(db, **config).start()
        self.admin = Http(self.server.base_url, ADMIN_KEY)
        self.cpu = CpuMeter(self.server.proc.pid, postgres_pids)
        self.driver_cores = max(1, opts.workers)

    def close(self):
        self.server.stop()
        if self.pg:
            self.pg.close()

    def users(self, n: int, prefix: str) -> list[dict]:
        uids = [f"{prefix}{i}" for i in range(n)]
        for i in range(0, n, 1000):
            self.admin.admin("POST", "/users/bulk", {"users": [{"uid": u, "pwd": PASSWORD} for u in uids[i:i + 1000]]})
        http = Http(self.server.base_url)
        return [{"uid": u, "token": http.login(u, PASSWORD)} for u in uids]

    def chat(self, rate: int, pairs: int, duration: float) -> dict:
        people = self.users(pairs * 2, f"c{rate}_{int(time.time())}_")
        all_pairs = [{"from": people[2 * i]["uid"], "from_token": people[2 * i]["token"],
                      "to": people[2 * i + 1]["uid"], "to_token": people[2 * i + 1]["token"]}
                     for i in range(pairs)]
        workers = min(self.driver_cores, pairs)
        jobs = [{"host": "127.0.0.1", "port": self.server.tcp_port, "pairs": all_pairs[w::workers],
                 "total_pairs": pairs, "rate": rate, "duration": duration} for w in range(workers)]
        s0, p0 = self.cpu.sample()
        wall0 = time.perf_counter()
        results = run_workers(chat_worker, jobs)
        wall = time.perf_counter() - wall0
        s1, p1 = self.cpu.sample()
        received = sum(r["received"] for r in results)
        expected = sum(r["expected"] for r in results)
        driver_cpu = sum(r["cpu"] for r in results)
        return {
            "scenario": "chat", "offered_rate": rate, "pairs": pairs, "messages": expected,
            "delivered": received, "duplicates": sum(r["dups"] for r in results),
            "delivered_per_s": round(received / duration, 1),
            "ack_ms": percentiles([x for r in results for x in r["ack"]]),
            "e2e_ms": percentiles([x for r in results for x in r["e2e"]]),
            "server_us_cpu_per_msg": round((s1 - s0) / max(1, received) * 1e6, 1),
            "postgres_us_cpu_per_msg": round((p1 - p0) / max(1, received) * 1e6, 1),
            "driver_cpu_share": round(driver_cpu / wall / os.cpu_count(), 2),
        }

    def conns(self, n: int, hold: float) -> dict:
        people = self.users(n, f"k{int(time.time())}_")
        rss0 = self.cpu.server.memory_info().rss
        workers = max(1, min(self.driver_cores, (n + 999) // 1000))
        jobs = [{"host": "127.0.0.1", "port": self.server.tcp_port, "users": people[w::workers],
                 "source": f"127.0.0.{2 + w % 250}", "hold": hold} for w in range(workers)]
        out: mp.Queue = mp.Queue()
        procs = [mp.Process(target=conns_worker, args=(job, out)) for job in jobs]
        for p in procs:
            p.start()
        results = [out.get() for _ in procs]
        rss1 = self.cpu.server.memory_info().rss
        s0, _ = self.cpu.sample()
        time.sleep(min(hold / 2, 5))
        s1, _ = self.cpu.sample()
        for p in procs:
            p.join()
        opened = sum(r["opened"] for r in results)
        return {"scenario": "conns", "connections": opened,
                "rss_kib_per_conn": round((rss1 - rss0) / 1024 / max(1, opened), 1),
                "token_logins_per_s": round(opened / max(r["seconds"] for r in results), 1),
                "idle_server_cpu_pct": round((s1 - s0) / min(hold / 2, 5) * 100, 2)}

    def http(self, requests: int) -> dict:
        token = self.users(1, f"h{int(time.time())}_")[0]["token"]
        client = Http(self.server.base_url, token)
        lat = []
        start = time.perf_counter()
        for _ in range(requests):
            t = time.perf_counter()
            client.qid("QID_IM_GET_DEPT_VER")
            lat.append((time.perf_counter() - t) * 1000)
        elapsed = time.perf_counter() - start
        return {"scenario": "http", "requests": requests, "per_s": round(requests / elapsed, 1),
                "ms": percentiles(lat), "note": "one sequential client (use wrk for the ratio)"}


def print_table(results: list[dict]) -> None:
    print(f"\n{'scenario':10} {'figures'}")
    for r in results:
        keys = {k: v for k, v in r.items() if k != "scenario"}
        print(f"{r['scenario']:10} {json.dumps(keys)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="all", choices=["all", "chat", "conns", "http"])
    p.add_argument("--database-url", default="")
    p.add_argument("--rates", default="1000,2000,5000")
    p.add_argument("--pairs", type=int, default=50)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--conns", type=int, default=5000)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--tiny", action="store_true", help="smallest sizes (smoke test)")
    opts = p.parse_args()
    if opts.tiny:
        opts.rates, opts.pairs, opts.duration, opts.conns = "50", 2, 1.0, 20
    bench = Bench(opts)
    results = []
    try:
        if opts.scenario in ("all", "conns"):
            results.append(bench.conns(opts.conns, hold=2 if opts.tiny else 20))
        if opts.scenario in ("all", "chat"):
            for rate in [int(r) for r in opts.rates.split(",")]:
                results.append(bench.chat(rate, opts.pairs, opts.duration))
        if opts.scenario in ("all", "http"):
            results.append(bench.http(50 if opts.tiny else 2000))
        for r in results:
            print(json.dumps(r), flush=True)
        print_table(results)
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
