#!/usr/bin/env python3
"""Load generator and benchmark suite (issue 7; docs/performance.md has the figures).

Raw sockets and pre-encoded frames, spread over several driver processes so that the driver is
not the bottleneck. Each driver process is this script run as `bench.py --worker KIND` (JSON job
on stdin, JSON result on stdout), fully gevent-patched; no multiprocessing.Queue, whose feeder
thread does not mix with a patched process. Every scenario reports the driver's CPU share and is
marked "driver_bound" when the driver used more than 90% of the cores it was given.

It starts `im serve` itself (embedded PostgreSQL, or --database-url), creates its users through
the admin bulk endpoint, and prints one JSON object per scenario, then a table. Server CPU comes
from /proc for the server process and, separately, for PostgreSQL's processes.

    python scripts/bench.py --scenario chat --rates 1000,2000,5000 --duration 10
    python scripts/bench.py --scenario fanout --members 500 --fanout-rate 200
    python scripts/bench.py --scenario history --history-rows 10000000
    python scripts/bench.py --scenario all --tiny          # the smoke test's size
"""

import argparse
import base64
import contextlib
import gc
import hashlib
import hmac
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import ADMIN_KEY, PASSWORD, ImServer, Postgres  # noqa: E402

from im import protocol  # noqa: E402
from im.client import Http, rows  # noqa: E402

SCENARIOS = ["conns", "chat", "fanout", "offline", "history", "http", "files"]
RECEIPT = protocol.IM_MESSAGE  # IM_MESSAGE_ACK {"type": 196609, "upto": N} marks received
RECEIPT_EVERY = 50  # messages per {"upto"} receipt, by default
BODY = "hello " * 5


# --- measurement helpers -----------------------------------------------------------------

def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    values = sorted(values)

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 3)
    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(values[-1], 3)}


def postmaster(dsn: str) -> psutil.Process | None:
    """The PostgreSQL server holding `dsn`, if it runs on this machine (parent of our backend)."""
    import psycopg2
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            return psutil.Process(psutil.Process(cur.fetchone()[0]).ppid())
    except psutil.Error:
        return None
    finally:
        conn.close()


class CpuMeter:
    """CPU seconds used by the server process and by its PostgreSQL cluster's processes (not
    by other clusters on the machine)."""

    def __init__(self, server_pid: int, dsn: str):
        self.server = psutil.Process(server_pid)
        self.postmaster = postmaster(dsn)

    def _pg(self) -> float:
        if self.postmaster is None:
            return 0.0
        total = 0.0
        for proc in [self.postmaster, *self.postmaster.children()]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def sample(self) -> tuple[float, float]:
        t = self.server.cpu_times()
        return t.user + t.system, self._pg()


class Window:
    """Server and PostgreSQL CPU and wall time over a measured stretch."""

    def __init__(self, cpu: CpuMeter):
        self.cpu = cpu

    def __enter__(self) -> "Window":
        self.s0, self.p0 = self.cpu.sample()
        self.t0, self.d0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.driver = time.perf_counter() - self.t0, time.process_time() - self.d0
        s1, p1 = self.cpu.sample()
        # PostgreSQL backends that exit meanwhile take their CPU time with them
        self.server, self.pg = s1 - self.s0, max(0.0, p1 - self.p0)

    def per_mib(self, mib: float, key: str) -> dict:
        """Server and driver (this process) ms CPU per MiB moved."""
        return {f"{key}_server_ms_cpu_per_mib": round(self.server / mib * 1e3, 2),
                f"{key}_driver_ms_cpu_per_mib": round(self.driver / mib * 1e3, 2)}

    def per(self, units: int) -> dict:
        """Server and PostgreSQL µs CPU per unit of work."""
        units = max(1, units)
        return {"server_us_cpu": round(self.server / units * 1e6, 1),
                "postgres_us_cpu": round(self.pg / units * 1e6, 1)}


@contextlib.contextmanager
def no_gc_pauses():
    """Keep the driver's own garbage collections out of the latencies it measures: a full
    collection of its heap (~15 ms) showed up as the server's p99. What the driver allocates
    meanwhile is acyclic (decoded frames, floats) and freed by reference counting."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def driver_figures(results: list[dict], wall: float, cores: int) -> dict:
    share = sum(r["cpu"] for r in results) / max(wall, 1e-6) / max(1, cores)
    return {"driver_cpu_share": round(share, 2), "driver_bound": share > 0.9}


def run_workers(kind: str, jobs: list[dict], script: str = __file__) -> list[dict]:
    """Run `<script> --worker kind` once per job, in parallel; their JSON results."""
    procs = [subprocess.Popen([sys.executable, script, "--worker", kind], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in jobs]
    for p, job in zip(procs, jobs):
        p.stdin.write(json.dumps(job))
        p.stdin.close()
    results = []
    for p in procs:
        out = p.stdout.read()
        if p.wait() != 0 or not out.strip():
            raise RuntimeError(f"{kind} driver exited with {p.returncode}")
        results.append(json.loads(out))
    return results


# --- driver side (runs in `--worker` processes, gevent-patched) ----------------------------

def frames(buf: bytearray):
    """Complete (msgtype, body bytes) frames at the front of buf, removed from it."""
    pos, size = 0, protocol.HEADER.size
    while len(buf) - pos >= size:
        length, msgtype = protocol.HEADER.unpack_from(buf, pos)
        end = pos + size + length
        if len(buf) < end:
            break
        yield msgtype, bytes(buf[pos + size:end])
        pos = end
    del buf[:pos]


class Retry(Exception):
    """The server answered `unavailable` (e.g. its pool is busy in a login storm): try again."""


def login(sock, uid: str, res: str, token: str = "", pwd: str = "", retries: dict | None = None) -> bytearray:
    """Log a raw socket in (again after a short pause while the server answers `unavailable`,
    counted in retries["n"]); returns the bytes read past the login ACK."""
    import gevent
    for attempt in range(20):
        try:
            return _login_once(sock, uid, res, token, pwd)
        except Retry:
            if retries is not None:
                retries["n"] += 1
            gevent.sleep(0.05 * (attempt + 1))
    raise RuntimeError(f"{uid}: login unavailable 20 times")


def _login_once(sock, uid: str, res: str, token: str, pwd: str) -> bytearray:
    import orjson
    cred = {"token": token} if token else {"pwd": pwd}
    sock.sendall(protocol.encode(protocol.IM_LOGIN, {"msgid": "l", "uid": uid, "res": res, **cred}))
    buf = bytearray()
    while True:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError(f"{uid}: closed during login")
        buf += data
        for msgtype, raw in frames(buf):
            body = orjson.loads(raw) if raw else {}
            if msgtype == protocol.IM_MESSAGE_ACK and body.get("type") == str(protocol.IM_LOGIN):
                if body.get("code") == "unavailable":
                    raise Retry()
                if "code" in body:
                    raise RuntimeError(f"login failed: {body}")
                return buf


def _connect(job: dict, source: str = ""):
    import socket
    s = socket.socket()
    if source:
        s.bind((source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect((job["host"], job["port"]))
    return s


def _pace(t0: float, i: int, rate: float) -> None:
    import gevent
    if rate > 0:
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            gevent.sleep(delay)


def _send_stream(job: dict, user: dict, to: str, count: int, rate: float, group: bool,
                 t0: float, ack_lat: list) -> int:
    """Log in, send `count` messages paced at `rate`/s (0 = flat out), stamp the send time
    (time.monotonic(), system-wide) in the body; read ACKs. Returns the successful ACKs."""
    import gevent
    import orjson
    sock = _connect(job)
    buf = login(sock, user["uid"], "bench", token=user["token"])
    kind = "1" if group else "0"
    sent: dict = {}
    acked = {"n": 0, "done": 0}

    def read_acks() -> None:
        while acked["done"] < count:
            data = sock.recv(262144)
            if not data:
                return
            now = time.monotonic()
            buf.extend(data)
            for msgtype, raw in frames(buf):
                if msgtype != protocol.IM_MESSAGE_ACK:
                    continue
                body = orjson.loads(raw)
                at = sent.pop(body.get("msgid"), None)
                if at is not None:
                    acked["done"] += 1
                    acked["n"] += "seq" in body
                    ack_lat.append((now - at) * 1000)
    reader = gevent.spawn(read_acks)
    for i in range(count):
        _pace(t0, i, rate)
        at = time.monotonic()
        sent[f"m{i}"] = at
        sock.sendall(protocol.encode(protocol.IM_MESSAGE, {
            "msgid": f"m{i}", "to": to, "type": kind, "body": f"{at:.6f} {BODY}"}))
    reader.join(timeout=job["timeout"])
    sock.close()
    return acked["n"]


def _receive(job: dict, user: dict, expect: int, every: int, out: dict) -> None:
    """Count IM_MESSAGE frames until `expect` arrived; latency from the stamp in the body;
    receipt (1:1 only) with {"upto": seq} every `every` messages, or with {"msgid", "from"}
    each message when `every` is 1 (0: none)."""
    import orjson
    sock = _connect(job, job.get("source", ""))
    buf = login(sock, user["uid"], "bench", token=user["token"])
    seen: set = set()
    last = got = 0
    sock.settimeout(job["timeout"])
    while True:
        now = time.monotonic()
        for msgtype, raw in frames(buf):
            if msgtype != protocol.IM_MESSAGE:
                continue
            body = orjson.loads(raw)
            key = (body["from"], body["msgid"])
            if key in seen:
                out["dups"] += 1
                continue
            seen.add(key)
            got += 1
            out["first"], out["last"] = min(out.get("first", now), now), max(out.get("last", now), now)
            out["lat"].append((now - float(body["body"].split(" ", 1)[0])) * 1000)
            last = max(last, body["seq"])
            if every == 1:
                sock.sendall(protocol.encode(protocol.IM_MESSAGE_ACK, {
                    "type": RECEIPT, "msgid": body["msgid"], "from": body["from"]}))
            elif every and (got % every == 0 or got == expect):
                sock.sendall(protocol.encode(protocol.IM_MESSAGE_ACK, {"type": RECEIPT, "upto": last}))
        if got >= expect:
            break
        try:
            data = sock.recv(262144)
        except OSError:
            break
        if not data:
            break
        buf.extend(data)
    out["received"] += got
    sock.close()


def worker_chat(job: dict) -> dict:
    """Pairs: a sender paced at the pair's share of the rate; the receiver receipts. With
    `offline`, nobody receives (messages to offline users) and senders go flat out."""
    import gevent
    ack_lat: list = []
    recv = {"lat": [], "dups": 0, "received": 0}
    acks = []
    t0 = time.perf_counter() + 0.5
    jobs = []
    for p in job["pairs"]:
        if not job.get("offline"):
            jobs.append(gevent.spawn(_receive, job, p["to"], job["count"], job["receipt_every"], recv))
        jobs.append(gevent.spawn(lambda p=p: acks.append(_send_stream(
            job, p["from"], p["to"]["uid"], job["count"], job["per_pair"], False,
            t0 + p.get("phase", 0.0), ack_lat))))
    gevent.joinall(jobs, timeout=job["timeout"] + 30)
    return {"ack": ack_lat, "e2e": recv["lat"], "received": recv["received"], "dups": recv["dups"],
            "acked": sum(acks), "expected": job["count"] * len(job["pairs"]),
            "cpu": time.process_time()}


def worker_fanout(job: dict) -> dict:
    """Group members receiving; worker 0 also runs the sender."""
    import gevent
    recv = {"lat": [], "dups": 0, "received": 0}
    ack_lat: list = []
    jobs = [gevent.spawn(_receive, job, m, job["count"], 0, recv) for m in job["members"]]
    sender = None
    if job.get("sender"):
        gevent.sleep(job["settle"])  # let every member log in first
        t0 = time.perf_counter()
        sender = gevent.spawn(_send_stream, job, job["sender"], job["gid"], job["count"],
                              job["rate"], True, t0, ack_lat)
        jobs.append(sender)
    gevent.joinall(jobs, timeout=job["timeout"] + 30)
    return {"e2e": recv["lat"], "received": recv["received"], "dups": recv["dups"], "ack": ack_lat,
            "acked": sender.value if sender else 0, "cpu": time.process_time(),
            "first": recv.get("first"), "last": recv.get("last")}


def worker_conns(job: dict) -> dict:
    """Password logins (connect, log in, close), then token logins held idle for `hold` s."""
    import gevent
    from gevent.pool import Pool
    pool = Pool(job["concurrency"])
    socks = []
    retries = {"n": 0}

    def pwd_login(user: dict) -> None:
        s = _connect(job, job["source"])
        login(s, user["uid"], "p", pwd=PASSWORD, retries=retries)
        s.close()

    def token_login(user: dict) -> None:
        s = _connect(job, job["source"])
        login(s, user["uid"], "t", token=user["token"], retries=retries)
        socks.append(s)
    start = time.perf_counter()
    pool.map(pwd_login, job["pwd_users"])
    pwd_s = time.perf_counter() - start
    Path(job["pwd_ready"]).write_text("1")
    while not Path(job["go"]).exists():  # the controller starts measuring the token logins
        gevent.sleep(0.05)
    start, cpu = time.perf_counter(), time.process_time()
    pool.map(token_login, job["users"])
    token_s, token_cpu = time.perf_counter() - start, time.process_time() - cpu
    ready = Path(job["ready"])
    ready.write_text("1")
    beats = gevent.spawn(_heartbeats, socks, job["heartbeat_s"])
    deadline = time.monotonic() + job["hold"]
    while time.monotonic() < deadline and ready.exists():
        gevent.sleep(0.2)
    beats.kill()
    for s in socks:
        s.close()
    return {"opened": len(socks), "pwd": len(job["pwd_users"]), "pwd_s": pwd_s, "retries": retries["n"],
            "token_s": token_s, "token_cpu": token_cpu, "cpu": time.process_time()}


def _heartbeats(socks: list, period: float) -> None:
    """Each connection sends IM_HEARTBEAT every `period` s, spread evenly over the period (the
    replies are left unread: a few bytes each)."""
    frame = protocol.encode(protocol.IM_HEARTBEAT, {})
    start = time.perf_counter()
    i = 0
    while socks:
        _pace(start, i, len(socks) / period)
        try:
            socks[i % len(socks)].sendall(frame)
        except OSError:
            pass
        i += 1


def worker_http(job: dict) -> dict:
    """Keep-alive connections each sending the same request back to back for `duration` s."""
    import gevent
    done = {"n": 0, "bad": 0}
    end = time.monotonic() + job["duration"]
    request = job["request"].encode("latin-1")

    def one_conn() -> None:
        s = _connect(job)
        buf = b""
        while time.monotonic() < end:
            s.sendall(request)
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            while len(buf) < length:
                buf += s.recv(65536)
            buf = buf[length:]
            done["n" if head.startswith(b"HTTP/1.1 200") else "bad"] += 1
        s.close()
    gevent.joinall([gevent.spawn(one_conn) for _ in range(job["connections"])])
    return {"requests": done["n"], "bad": done["bad"], "cpu": time.process_time()}


WORKERS = {"chat": worker_chat, "fanout": worker_fanout, "conns": worker_conns, "http": worker_http}


def worker_main(kind: str) -> int:
    from gevent import monkey
    monkey.patch_all()
    job = json.loads(sys.stdin.read())
    with no_gc_pauses():
        result = WORKERS[kind](job)
    sys.stdout.write(json.dumps(result))
    return 0


# --- scenarios (the controlling process) ---------------------------------------------------

class Bench:
    def __init__(self, opts):
        self.opts = opts
        self.pg = None
        self.db = opts.database_url
        if not self.db:
            self.pg = Postgres()
            self.db = self.pg.create_database()
        config = {"log_level": "WARNING", "max_outbox_frames": 100000}
        self.server = ImServer(self.db, **config).start()
        self.admin = Http(self.server.base_url, ADMIN_KEY)
        self.cpu = CpuMeter(self.server.proc.pid, self.db)
        self.cores = max(1, opts.workers)
        self.tag = f"{int(time.time()) % 100000}"

    def close(self):
        self.server.stop()
        if self.pg:
            self.pg.close()

    def job(self, **fields) -> dict:
        return {"host": "127.0.0.1", "port": self.server.tcp_port, "timeout": 60, **fields}

    def create_users(self, uids: list[str]) -> None:
        for i in range(0, len(uids), 1000):
            self.admin.admin("POST", "/users/bulk", {"users": [{"uid": u, "pwd": PASSWORD} for u in uids[i:i + 1000]]})

    def users(self, n: int, prefix: str) -> list[dict]:
        """n new users with session tokens (HTTP logins, 8 at a time)."""
        uids = [f"{prefix}{self.tag}_{i}" for i in range(n)]
        self.create_users(uids)

        def token(uid: str) -> str:
            return Http(self.server.base_url).login(uid, PASSWORD)
        with ThreadPoolExecutor(8) as pool:
            return [{"uid": u, "token": t} for u, t in zip(uids, pool.map(token, uids))]

    def sql(self, statements: list[tuple[str, tuple]]) -> None:
        import psycopg2
        conn = psycopg2.connect(self.db)
        try:
            with conn.cursor() as cur:
                for query, args in statements:
                    cur.execute(query, args)
            conn.commit()
        finally:
            conn.close()

    # 1. conns
    def conns(self, n: int, hold: float, pwd_logins: int, heartbeat_s: float = 30) -> dict:
        people = self.users(n, "k")
        rss0 = self.cpu.server.memory_info().rss
        procs = max(1, (n + 4999) // 5000)  # ≤ 5,000 sockets per driver process
        ready_dir = Path(tempfile.mkdtemp(prefix="benchc"))
        jobs = [self.job(users=people[w::procs], pwd_users=people[:pwd_logins][w::procs],
                         source=f"127.0.0.{2 + w % 250}", hold=hold, concurrency=max(1, 200 // procs),
                         heartbeat_s=heartbeat_s, go=str(ready_dir / "go"), pwd_ready=str(ready_dir / f"p{w}"),
                         ready=str(ready_dir / f"w{w}")) for w in range(procs)]
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(run_workers, "conns", jobs)
            _wait_files(ready_dir, "p*", procs, running)
            with Window(self.cpu) as logins:
                (ready_dir / "go").write_text("1")
                _wait_files(ready_dir, "w*", procs, running)
            time.sleep(1)
            rss1 = self.cpu.server.memory_info().rss
            idle = min(hold / 2, 10)
            with Window(self.cpu) as w:
                time.sleep(idle)
            shutil.rmtree(ready_dir)  # releases the drivers
            results = running.result()
        opened = sum(r["opened"] for r in results)
        return {"scenario": "conns", "connections": opened, "driver_processes": procs,
                "rss_kib_per_conn": round((rss1 - rss0) / 1024 / max(1, opened), 1),
                "server_rss_mib": round(rss1 / 2 ** 20, 1),
                "token_logins_per_s": round(opened / max(r["token_s"] for r in results), 1),
                "token_login_cpu": logins.per(opened),
                **{f"token_login_{k}": v for k, v in driver_figures(
                    [{"cpu": r["token_cpu"]} for r in results],
                    max(r["token_s"] for r in results), procs).items()},
                "logins_retried": sum(r["retries"] for r in results),
                "pwd_logins_per_s": round(pwd_logins / max(1e-6, max(r["pwd_s"] for r in results)), 1),
                "heartbeat_s": heartbeat_s, "idle_server_cpu_pct": round(w.server / idle * 100, 2),
                "server_us_per_heartbeat": round(w.server / max(1, idle * opened / heartbeat_s) * 1e6, 1),
                "idle_postgres_cpu_pct": round(w.pg / idle * 100, 2)}

    # 2. chat
    def pairs(self, n: int, prefix: str) -> list[dict]:
        people = self.users(n * 2, prefix)
        return [{"from": people[2 * i], "to": people[2 * i + 1]} for i in range(n)]

    def chat(self, rate: int, pairs: int, duration: float) -> dict:
        all_pairs = self.pairs(pairs, f"c{rate}_")
        procs = min(self.cores, pairs)
        count = max(1, int(rate / pairs * duration))
        for k, pair in enumerate(all_pairs):  # senders spread over a period, not in lockstep
            pair["phase"] = k / rate
        jobs = [self.job(pairs=all_pairs[w::procs], count=count, per_pair=rate / pairs,
                         receipt_every=self.opts.receipt_every, timeout=duration + 60)
                for w in range(procs)]
        with Window(self.cpu) as w:
            results = run_workers("chat", jobs)
        received = sum(r["received"] for r in results)
        expected = sum(r["expected"] for r in results)
        self._settle()
        unreceived = self._unreceived([p["to"]["uid"] for p in all_pairs])
        per = w.per(received)
        return {"scenario": "chat", "offered_rate": rate, "pairs": pairs, "messages": expected,
                "acked": sum(r["acked"] for r in results), "delivered": received,
                "duplicates": sum(r["dups"] for r in results), "unreceipted": unreceived,
                "exactly_once": received == expected and not any(r["dups"] for r in results),
                "delivered_per_s": round(received / max(duration, w.wall - 1.5), 1),
                "ack_ms": percentiles([x for r in results for x in r["ack"]]),
                "e2e_ms": percentiles([x for r in results for x in r["e2e"]]),
                "server_us_cpu_per_msg": per["server_us_cpu"],
                "postgres_us_cpu_per_msg": per["postgres_us_cpu"],
                **driver_figures(results, w.wall, procs)}

    def _settle(self) -> None:
        time.sleep(0.5)  # receipts are written by a batching writer

    def _unreceived(self, uids: list[str]) -> int:
        import psycopg2
        conn = psycopg2.connect(self.db)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM tp_im_message WHERE msgto = ANY(%s) AND received = 0",
                            (uids,))
                return cur.fetchone()[0]
        finally:
            conn.close()

    # 3. fanout
    def fanout(self, members: int, rate: float, duration: float) -> dict:
        people = self.users(members, "f")
        gid = f"bench{self.tag}"
        self.sql([("INSERT INTO tp_im_group (gid, gname, userid) VALUES (%s, 'bench', %s)",
                   (gid, people[0]["uid"])),
                  ("INSERT INTO tp_im_group_peer (gid, userid, \"right\") SELECT %s, unnest(%s::text[]), '0'",
                   (gid, [p["uid"] for p in people]))])
        procs = max(2, self.cores)  # receiving processes; the sender has its own
        count = max(1, int(rate * duration))
        receivers = people[1:]
        jobs = [self.job(members=receivers[w::procs], count=count, gid=gid, rate=rate,
                         sender=None, settle=0, timeout=duration + 60) for w in range(procs)]
        jobs.append(self.job(members=[], count=count, gid=gid, rate=rate, sender=people[0],
                             settle=2 + members / 250, timeout=duration + 60))
        with Window(self.cpu) as w:
            results = run_workers("fanout", jobs)
        received = sum(r["received"] for r in results)
        expected = count * len(receivers)
        # from the first delivery to the last one, on the system-wide monotonic clock
        spans = [r for r in results if r["first"] is not None]
        busy = max(r["last"] for r in spans) - min(r["first"] for r in spans) if spans else 0
        per = w.per(received)
        return {"scenario": "fanout", "members": members, "messages": count, "offered_rate": rate,
                "deliveries": received, "expected": expected,
                "duplicates": sum(r["dups"] for r in results),
                "offered_deliveries_per_s": round(rate * len(receivers), 1),
                "deliveries_per_s": round(received / max(busy, 1e-6), 1),
                "e2e_ms": percentiles([x for r in results for x in r["e2e"]]),
                "ack_ms": percentiles(results[-1]["ack"]),
                "server_us_cpu_per_delivery": per["server_us_cpu"],
                "postgres_us_cpu_per_delivery": per["postgres_us_cpu"],
                "note": "includes driver login time for members; cpu over the whole run",
                **driver_figures(results, w.wall, procs + 1)}

    # 4. offline
    def offline(self, total: int, pairs: int, page: int) -> dict:
        all_pairs = self.pairs(pairs, "o")
        procs = min(self.cores, pairs)
        count = max(1, total // pairs)
        jobs = [self.job(pairs=all_pairs[w::procs], count=count, per_pair=0, offline=True,
                         timeout=120) for w in range(procs)]
        with Window(self.cpu) as store_w:
            results = run_workers("chat", jobs)
        stored = sum(r["acked"] for r in results)
        with Window(self.cpu) as fetch_w:
            with ThreadPoolExecutor(min(8, pairs)) as pool:
                fetched = sum(pool.map(lambda p: self._fetch_all(p["to"]["token"], page), all_pairs))
        left = self._unreceived([p["to"]["uid"] for p in all_pairs])
        return {"scenario": "offline", "messages": count * pairs, "stored": stored,
                "stored_per_s": round(stored / store_w.wall, 1),
                "store_server_us_cpu_per_msg": store_w.per(stored)["server_us_cpu"],
                "store_postgres_us_cpu_per_msg": store_w.per(stored)["postgres_us_cpu"],
                "fetched": fetched, "left_unreceived": left, "page": page,
                "fetched_per_s": round(fetched / fetch_w.wall, 1),
                "fetch_server_us_cpu_per_msg": fetch_w.per(fetched)["server_us_cpu"],
                "fetch_postgres_us_cpu_per_msg": fetch_w.per(fetched)["postgres_us_cpu"],
                **driver_figures(results, store_w.wall, procs)}

    def _fetch_all(self, token: str, page: int) -> int:
        """Fetch and mark pages of unreceived messages until none is left."""
        http = KeepAlive(self.server.http_port, token)
        fetched = 0
        while True:
            res = http.qid("QID_IM_GET_OFFLINE_MSG", limit=str(page))
            got = rows(res)
            if not got:
                return fetched
            fetched += len(got)
            http.qid("QID_IM_RECIVE_OFFLINE_MSG", seq=str(max(int(r["seq"]) for r in got)))

    # 5. history
    def history(self, total: int, queries: int) -> dict:
        people = 1000 if total < 1_000_000 else 10_000
        uids = [f"h{self.tag}_{i}" for i in range(people)]
        self.create_users(uids)
        start = time.perf_counter()
        self._copy_messages(uids, total)
        copy_s = time.perf_counter() - start
        sample = random.Random(7).sample(range(people), 20)
        http = {i: KeepAlive(self.server.http_port, Http(self.server.base_url).login(uids[i], PASSWORD))
                for i in sample}
        lat: dict[str, list] = {"history": [], "history_page2": [], "offline": [], "mailbox_after": [],
                                "dept_ver": []}  # a QID without a query: the HTTP path's own cost
        with no_gc_pauses(), Window(self.cpu) as w:
            for q in range(queries):
                i = sample[q % len(sample)]
                client = http[i]
                friend = uids[_friend(i, q % FRIENDS, people)]
                res = _timed(lat["history"], client.qid, "QID_IM_GET_ROSTER_MSG_HISTORY",
                             msgto=friend, days="365")
                got = rows(res)
                if got:
                    _timed(lat["history_page2"], client.qid, "QID_IM_GET_ROSTER_MSG_HISTORY",
                           msgto=friend, days="365", before_seq=got[0]["seq"])
                _timed(lat["offline"], client.qid, "QID_IM_GET_OFFLINE_MSG", limit="100")
                _timed(lat["dept_ver"], client.qid, "QID_IM_GET_DEPT_VER")
                _timed(lat["mailbox_after"], client.qid, "QID_IM_GET_OFFLINE_MSG", limit="100",
                       after_seq=str(max(0, int(got[-1]["seq"]) - 200) if got else 0))
        per = w.per(sum(len(v) for v in lat.values()))
        return {"scenario": "history", "rows": total, "users": people, "copy_s": round(copy_s, 1),
                "copy_rows_per_s": round(total / copy_s, 1), "queries": queries,
                "server_us_cpu_per_qid": per["server_us_cpu"],  # the QIDs of all five kinds
                "postgres_us_cpu_per_qid": per["postgres_us_cpu"],
                **{f"{k}_ms": percentiles(v) for k, v in lat.items()}}

    def _copy_messages(self, uids: list[str], total: int) -> None:
        """COPY `total` 1:1 messages over the last 365 days: each user writes mostly to a
        few friends; mailbox positions consistent with im_mailbox; the last 1% unreceived.
        The secondary indexes are dropped during the COPY and built again after it (a bulk
        build is many times faster than maintaining six indexes row by row); a CHECKPOINT at the
        end keeps the load's writes out of the measured rounds."""
        import psycopg2
        conn = psycopg2.connect(self.db)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tp_im_message' "
                            "AND indexname <> 'tp_im_message_pkey'")
                indexes = cur.fetchall()
                for name, _ in indexes:
                    cur.execute(f"DROP INDEX {name}")
                cur.copy_expert("COPY tp_im_message (msgid, msg, msgfrom, msgto, send_time, received, "
                                "indb_time, from_res, to_res, from_seq, to_seq) FROM STDIN",
                                _MessageRows(uids, total))
                cur.execute("SET maintenance_work_mem = '512MB'")
                for _, definition in indexes:
                    cur.execute(definition)
                cur.execute("INSERT INTO im_mailbox (uid, last_seq, given_seq) "
                            "SELECT u, max(s), max(s) FROM (SELECT msgfrom u, from_seq s FROM tp_im_message "
                            "UNION ALL SELECT msgto, to_seq FROM tp_im_message) x WHERE u = ANY(%s) GROUP BY u "
                            "ON CONFLICT (uid) DO UPDATE SET last_seq = EXCLUDED.last_seq, "
                            "given_seq = EXCLUDED.given_seq", (uids,))
                # the receipt floor: the received messages of each mailbox are a prefix of it
                cur.execute("INSERT INTO im_received (uid, received_seq) "
                            "SELECT msgto, max(to_seq) FROM tp_im_message WHERE received = 1 AND msgto = ANY(%s) "
                            "GROUP BY msgto ON CONFLICT (uid) DO UPDATE SET received_seq = EXCLUDED.received_seq",
                            (uids,))
            conn.commit()
            conn.set_isolation_level(0)
            with conn.cursor() as cur:
                cur.execute("VACUUM ANALYZE tp_im_message")
                cur.execute("ANALYZE im_received")
                try:  # the load's dirty pages written before the rounds (needs superuser)
                    cur.execute("CHECKPOINT")
                except psycopg2.Error:
                    pass
        finally:
            conn.close()

    # 6. http
    def http(self, duration: float, connections: int) -> dict:
        token = self.users(1, "w")[0]["token"]
        qid = _post("/api/QID_IM_GET_DEPT_VER", token, b"{}")
        hello = _post("/", "", b"{}")
        figures = {}
        for name, app, request in (("qid", "wsgi:app", qid), ("hello", "bench:hello", hello)):
            figures[name] = self._gunicorn_load(app, request, duration, connections)
        ratio = figures["qid"]["per_s"] / max(1e-6, figures["hello"]["per_s"])
        return {"scenario": "http", "workers": 1, "connections": connections,
                "load": figures["qid"]["load"], "qid_per_s": figures["qid"]["per_s"],
                "hello_per_s": figures["hello"]["per_s"], "ratio": round(ratio, 3),
                "errors": figures["qid"]["errors"] + figures["hello"]["errors"],
                "driver_bound": figures["qid"].get("driver_bound", False)}

    def _gunicorn_load(self, app: str, request: str, duration: float, connections: int) -> dict:
        port = _free_port()
        env = {**self.server.env(), "IM_HTTP_PORT": str(port), "IM_HTTP_HOST": "127.0.0.1",
               "WEB_CONCURRENCY": "1", "PYTHONPATH": f"{ROOT}:{ROOT / 'scripts'}"}
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "etc/gunicorn.conf.py"),
                                 app], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_http(port, request)
            if shutil.which("wrk"):
                return _wrk(port, request, duration, connections)
            jobs = [self.job(port=port, request=request, duration=duration,
                             connections=connections // self.cores) for _ in range(self.cores)]
            start = time.perf_counter()
            results = run_workers("http", jobs)
            wall = time.perf_counter() - start
            return {"load": "generator", "per_s": round(sum(r["requests"] for r in results) / duration, 1),
                    "errors": sum(r["bad"] for r in results), **driver_figures(results, wall, self.cores)}
        finally:
            proc.terminate()
            proc.wait(15)

    # 7. files
    def files(self, size: int, chunk: int) -> dict:
        """Upload by raw-body chunks (the headline) and by base64 multipart chunks (the contract's
        form), download the first by blocks; against a plain copy with fsync."""
        token = self.users(1, "u")[0]["token"]
        data = os.urandom(size)
        copy_s = sorted(_copy_seconds(data) for _ in range(COPIES))[COPIES // 2]
        mb = size / 2 ** 20
        client = RawHttp(self.server.http_port, token)
        figures = {"scenario": "files", "mib": round(mb, 1), "chunk_kib": chunk // 1024,
                   "copy_mib_s": round(mb / copy_s, 1)}
        names = {}
        view = memoryview(data)
        for kind in ("raw", "form"):
            names[kind] = f"{hashlib.md5(f'{kind}{time.time()}'.encode()).hexdigest()}.bin"
            with Window(self.cpu) as w:
                for offset in range(0, size, chunk):
                    _upload(client, token, names[kind], size, offset, view[offset:offset + chunk], kind)
            key = "upload" if kind == "raw" else "upload_form"
            figures.update({f"{key}_mib_s": round(mb / w.wall, 1), f"{key}_ratio": round(copy_s / w.wall, 3),
                            **w.per_mib(mb, key)})
        got = io.BytesIO()
        with Window(self.cpu) as w:
            for offset in range(0, size, chunk):
                form = {"filename": names["raw"], "offset": offset, "block-size": chunk,
                        "signature": _sign(token, names["raw"], offset)}
                got.write(_expect(client, "/file/download", form))
        form_md5 = {"filename": names["form"], "md5": hashlib.md5(data).hexdigest(),
                    "signature": _sign(token, names["form"], "")}
        _expect(client, "/file/check", form_md5)
        client.close()
        return {**figures, "download_mib_s": round(mb / w.wall, 1), "download_ratio": round(copy_s / w.wall, 3),
                **w.per_mib(mb, "download"), "intact": got.getvalue() == data}


COPIES = 5  # the plain copy's speed swings 230-540 MiB/s from one minute to the next: a median


def _copy_seconds(data: bytes) -> float:
    """shutil.copyfile of `data` plus an fsync of the copy (an upload ends with the file on disk)."""
    tmp = Path(tempfile.mkdtemp(prefix="benchf"))
    try:
        src, dst = tmp / "src", tmp / "dst"
        src.write_bytes(data)
        start = time.perf_counter()
        shutil.copyfile(src, dst)
        with open(dst, "rb+") as f:
            os.fsync(f.fileno())
        return time.perf_counter() - start
    finally:
        shutil.rmtree(tmp)


def _upload(client: "RawHttp", token: str, name: str, size: int, offset: int, piece, kind: str) -> None:
    """One chunk: a raw body with the parameters in the query string, or a multipart form with
    base64 `bin` (PROTOCOL.md §3)."""
    from urllib.parse import urlencode
    params = {"filename": name, "filesize": size, "offset": offset, "signature": _sign(token, name, offset)}
    if kind == "form":
        _expect(client, "/file/upload", {**params, "bin": base64.b64encode(piece).decode()}, multipart=True)
        return
    client.post(f"/file/upload?{urlencode(params)}", piece, "application/octet-stream")


class RawHttp:
    """POSTs on one keep-alive socket (the files, offline and history scenarios' client): the
    request head written by hand and sent with the body in one `sendmsg` (no copy of a chunk),
    the answer read by Content-Length. http.client copied each chunk and parsed each answer's
    headers with the email package (~100 µs per answer, ~1.3 ms of CPU per MiB uploaded), in
    series with the server's work and inside the measured latencies."""

    def __init__(self, port: int, token: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        self.buf = b""

    def post(self, path: str, body, kind: str) -> bytes:
        """The body of a 200 answer; anything else raises."""
        head = (f"POST {path} HTTP/1.1\r\n{self.head}Content-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        sent = self.sock.sendmsg([head, body])
        if sent < len(head):  # the rest as sendall sends it
            self.sock.sendall(head[sent:])
            sent = len(head)
        if sent - len(head) < len(body):
            self.sock.sendall(memoryview(body)[sent - len(head):])
        status, answer = self._answer()
        if status != 200:
            raise RuntimeError(f"{path}: {status} {answer[:200]!r}")
        return answer

    def _answer(self) -> tuple[int, bytes]:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._more()
        head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
        length = next(int(line.split(":", 1)[1]) for line in head.split("\r\n")
                      if line.lower().startswith("content-length:"))
        body = bytearray(length)
        got = min(length, len(self.buf))
        body[:got], self.buf = self.buf[:got], self.buf[got:]
        with memoryview(body) as view:
            while got < length:
                n = self.sock.recv_into(view[got:])
                if not n:
                    raise ConnectionError("the server closed the connection")
                got += n
        return int(head.split(" ", 2)[1]), bytes(body)

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buf += data

    def close(self) -> None:
        self.sock.close()


# --- helpers for the scenarios ----------------------------------------------------------------

FRIENDS = 8


def _wait_files(folder: Path, pattern: str, count: int, running) -> None:
    """Until `count` files match `pattern` in folder (or the drivers have exited)."""
    while len(list(folder.glob(pattern))) < count and not running.done():
        time.sleep(0.05)


def _friend(i: int, k: int, people: int) -> int:
    """The k-th regular correspondent of user i (never i)."""
    return (i + 1 + (k * 7919 + i * 31) % (people - 1)) % people


class _MessageRows(io.RawIOBase):
    """COPY text rows, generated as PostgreSQL reads them."""

    def __init__(self, uids: list[str], total: int):
        self.uids, self.total = uids, total
        self.rand = random.Random(42)
        self.seq = [0] * len(uids)
        self.i = 0
        self.start = datetime.now() - timedelta(days=365)
        self.step = 365 * 86400 / max(1, total)
        self.pending = b""

    def readable(self) -> bool:
        return True

    def _rows(self, n: int) -> bytes:
        lines = []
        rand, uids, seq, people = self.rand, self.uids, self.seq, len(self.uids)
        for _ in range(min(n, self.total - self.i)):
            i = self.i
            self.i += 1
            s = rand.randrange(people)
            r = _friend(s, rand.randrange(FRIENDS), people) if rand.random() < 0.9 else \
                (s + 1 + rand.randrange(people - 1)) % people
            seq[s] += 1
            seq[r] += 1
            at = (self.start + timedelta(seconds=i * self.step)).strftime("%Y-%m-%d %H:%M:%S")
            received = "0" if i >= self.total * 0.99 else "1"
            lines.append(f"b{i}\tmessage {i} {BODY}\t{uids[s]}\t{uids[r]}\t{at}\t{received}\t"
                         f"{at}+00\tpc\t\t{seq[s]}\t{seq[r]}\n")
        return "".join(lines).encode()

    def readinto(self, b) -> int:
        while len(self.pending) < len(b) and self.i < self.total:
            self.pending += self._rows(2000)
        n = min(len(b), len(self.pending))
        b[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        buf = bytearray(size if size > 0 else 1 << 20)
        n = self.readinto(buf)
        return bytes(buf[:n])


class KeepAlive(RawHttp):
    """QIDs over one keep-alive HTTP connection, as real clients send them."""

    def qid(self, name: str, **params) -> dict:
        return json.loads(self.post(f"/api/{name}", json.dumps(params).encode(), "application/json"))


def _timed(into: list, fn, *args, **kw):
    start = time.perf_counter()
    res = fn(*args, **kw)
    into.append((time.perf_counter() - start) * 1000)
    return res


def _post(path: str, token: str, body: bytes) -> str:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body.decode()}")


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(port: int, request: str, timeout: float = 30) -> None:
    """Until the worker answers `request` (gunicorn listens before its worker has loaded the app)."""
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
                s.sendall(request.encode("latin-1"))
                if s.recv(4096).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer on {port}")


def _wrk(port: int, request: str, duration: float, connections: int) -> dict:
    head, _, body = request.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {k: v.strip() for k, v in (line.split(":", 1) for line in lines[1:]) if k != "Content-Length"}
    path = lines[0].split(" ")[1]
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n' +
                      "".join(f'wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n' for k, v in headers.items()))
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, int(duration))}s", "-s",
                              str(script), f"http://127.0.0.1:{port}{path}"],
                             capture_output=True, text=True, timeout=duration + 30).stdout
    finally:
        script.unlink()
    per_s = float(out.split("Requests/sec:")[1].split()[0])
    errors = 0
    if "Non-2xx" in out:
        errors = int(out.split("Non-2xx or 3xx responses:")[1].split()[0])
    return {"load": "wrk", "per_s": per_s, "errors": errors}


def _sign(token: str, name: str, offset: int | str) -> str:
    return hmac.new(token.encode(), f"{name}\n{offset}".encode(), hashlib.sha256).hexdigest()


def _multipart(form: dict) -> tuple[bytes, str]:
    """A multipart/form-data body: a base64 chunk needs no percent-encoding there (an
    urlencoded 1 MiB chunk is percent-decoded in Python by the server: ~5 MiB/s)."""
    boundary = "bench" + hashlib.md5(str(time.time()).encode()).hexdigest()
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
             for k, v in form.items()]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


def _expect(client: RawHttp, path: str, form: dict, multipart: bool = False) -> bytes:
    from urllib.parse import urlencode
    if multipart:
        body, kind = _multipart(form)
    else:
        body, kind = urlencode(form).encode(), "application/x-www-form-urlencoded"
    return client.post(path, body, kind)


def hello(environ, start_response):
    """The hello-world WSGI app the http scenario compares against (same gunicorn worker)."""
    body = b'{"type":"text","result":"hello"}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


# --- command line -----------------------------------------------------------------------------

def run(bench: Bench, opts, scenario: str) -> list[dict]:
    tiny = opts.tiny
    if scenario == "conns":
        return [bench.conns(opts.conns, hold=4 if tiny else 30, pwd_logins=min(opts.conns, 1000),
                            heartbeat_s=opts.heartbeat_s)]
    if scenario == "chat":
        return [bench.chat(int(rate), opts.pairs, opts.duration) for rate in opts.rates.split(",")]
    if scenario == "fanout":
        return [bench.fanout(opts.members, opts.fanout_rate, opts.duration)]
    if scenario == "offline":
        return [bench.offline(opts.offline, opts.pairs, page=100 if tiny else 1000)]
    if scenario == "history":
        return [bench.history(opts.history_rows, queries=20 if tiny else 500)]
    if scenario == "http":
        return [bench.http(1 if tiny else opts.duration, 4 if tiny else 64)]
    if tiny:
        return [bench.files(256 * 1024, 64 * 1024)]
    return [bench.files(opts.file_mib * 2 ** 20, opts.file_chunk_kib * 1024)]


def print_table(results: list[dict]) -> None:
    print(f"\n{'scenario':10} figures")
    for r in results:
        keys = {k: v for k, v in r.items() if k != "scenario"}
        print(f"{r['scenario']:10} {json.dumps(keys)}")


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        return worker_main(sys.argv[2])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="all", help=f"all or a comma list of {','.join(SCENARIOS)}")
    p.add_argument("--database-url", default="")
    p.add_argument("--rates", default="1000,2000,5000", help="chat: offered msgs/s, comma separated")
    p.add_argument("--pairs", type=int, default=50)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--receipt-every", type=int, default=RECEIPT_EVERY,
                   help='chat: receipt {"upto"} every N messages; 1: each by msgid, as most clients do')
    p.add_argument("--conns", type=int, default=19000)
    p.add_argument("--heartbeat-s", type=float, default=30, help="conns: each connection's heartbeat period")
    p.add_argument("--members", type=int, default=500)
    p.add_argument("--fanout-rate", type=float, default=200, help="group messages/s")
    p.add_argument("--offline", type=int, default=100_000, help="messages to offline users")
    p.add_argument("--history-rows", type=int, default=10_000_000)
    p.add_argument("--file-mib", type=int, default=100)
    p.add_argument("--file-chunk-kib", type=int, default=1024, help="upload chunk and download block (≤ 8192)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="driver processes (cores given to the driver)")
    p.add_argument("--tiny", action="store_true", help="every scenario at a tiny size (smoke test)")
    opts = p.parse_args()
    if opts.tiny:
        opts.rates, opts.pairs, opts.duration, opts.conns = "50", 2, 1.0, 20
        opts.members, opts.fanout_rate, opts.offline, opts.history_rows = 5, 20, 200, 5000
    chosen = SCENARIOS if opts.scenario == "all" else opts.scenario.split(",")
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario {', '.join(sorted(unknown))}")
    bench = Bench(opts)
    results = []
    try:
        for scenario in chosen:
            for r in run(bench, opts, scenario):
                results.append(r)
                print(json.dumps(r), flush=True)
        print_table(results)
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
