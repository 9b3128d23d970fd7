#!/usr/bin/env python3
"""Soak test (issue 6): N simulated users chat, join and leave groups, upload files and
reconnect at random for a bounded duration against one `im serve`; then a consistency check.

Each user is a greenlet with its own TCP connection (gevent-patched sockets, so thousands fit in
one process). While it runs, the server's RSS and open file descriptors are sampled; at the end:

- every ACKed message is stored exactly once, at the position its ACK named;
- every stored 1:1 message was either seen live by its recipient or is still unreceived (offline);
  nothing is marked received that its recipient did not see (users receipt exactly what they see);
- no request was answered `internal`, and the server is still alive.

It prints one JSON line per sample and a JSON summary; the exit status is 1 on any violation.

    python scripts/soak.py --users 2000 --duration 600          # the issue's run
    python scripts/soak.py --users 50 --duration 20             # a quick look
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import PASSWORD, ImServer, Postgres  # noqa: E402

from im import protocol  # noqa: E402
from im.client import Client, RequestFailed  # noqa: E402
from im.features.files import signature  # noqa: E402

MSG, ACK, CHATROOM = protocol.IM_MESSAGE, protocol.IM_MESSAGE_ACK, protocol.IM_CHATROOM
ACTIONS = {"chat": 50, "group_chat": 15, "join": 8, "leave": 6, "upload": 3, "reconnect": 5}


class User:
    """One simulated user: its connection, what it sent and what it saw."""

    def __init__(self, soak: "Soak", uid: str):
        self.soak, self.uid = soak, uid
        self.client: Client | None = None
        self.token = ""
        self.acked: dict[tuple[str, str], int] = {}   # (kind, msgid) -> seq
        self.seen: set[tuple[str, str]] = set()       # 1:1 (from, msgid) seen live
        self.groups: set[str] = set()

    def connect(self, attempts: int = 10) -> None:
        """(Re)connect by token (by password the first time), retrying what the server may
        refuse for a while (`unavailable` under overload) or a transport error."""
        for attempt in range(attempts):
            if self.client is not None:
                self.client.close()
            try:
                self.client = self.soak.server.client(timeout=30)
                ack = self.client.login(self.uid, PASSWORD if not self.token else None,
                                        token=self.token or None, res="soak")
                self.token = ack["token"]
                return
            except (RequestFailed, OSError) as err:
                self.soak.count(f"login:{getattr(err, 'code', None) or type(err).__name__}")
                if attempt == attempts - 1:
                    raise
                gevent.sleep(random.uniform(0.5, 2.0) * (attempt + 1))

    def read(self, seconds: float) -> None:
        """Think for a while, reading (and receipting) whatever arrives."""
        client, until = self.client, time.monotonic() + seconds
        frames = list(client.backlog)
        client.backlog.clear()
        while (left := until - time.monotonic()) > 0:
            try:
                frames.append(client.recv(left))
            except TimeoutError:
                break
        for msgtype, body in frames:
            if msgtype == MSG and body.get("type") == "0":
                self.seen.add((body["from"], body["msgid"]))
                self.client.send(ACK, {"type": MSG, "msgid": body["msgid"], "from": body["from"]})
            elif msgtype == protocol.IM_NOTIFY_KICK:
                self.soak.count("kicked")

    def request(self, kind: str, fn, *args, **kw):
        try:
            result = fn(*args, **kw)
            self.soak.count(kind)
            return result
        except RequestFailed as err:
            self.soak.count(f"{kind}:{err.code}")
            return None

    # --- actions ----------------------------------------------------------------------------
    def chat(self) -> None:
        msgid = uuid.uuid4().hex
        ack = self.request("chat", self.client.message, random.choice(self.soak.uids), "soak " + msgid,
                           msgid=msgid)
        if ack:
            self.acked["0", msgid] = ack["seq"]

    def group_chat(self) -> None:
        if self.groups:
            msgid = uuid.uuid4().hex
            ack = self.request("group_chat", self.client.message, random.choice(sorted(self.groups)),
                               "group " + msgid, group=True, msgid=msgid)
            if ack:
                self.acked["1", msgid] = ack["seq"]

    def join(self) -> None:
        gid = random.choice(self.soak.gids)
        self.request("join", self.client.request, CHATROOM, {"type": "5", "gid": gid})
        self.groups.add(gid)

    def leave(self) -> None:
        if self.groups:
            gid = self.groups.pop()
            self.request("leave", self.client.request, CHATROOM, {"type": "2", "rid": gid})

    def upload(self) -> None:
        name, data = uuid.uuid4().hex + ".bin", os.urandom(random.randint(1, 64 * 1024))
        form = {"filename": name, "filesize": len(data), "offset": 0,
                "bin": base64.b64encode(data).decode(), "signature": signature(self.token, name, "0")}
        status, _, _ = self.soak.server.http(self.token).call(
            "POST", "/file/upload", raw=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.soak.count("upload" if status == 200 else f"upload:{status}")

    def reconnect(self) -> None:
        self.read(0.05)
        self.connect()
        self.soak.count("reconnect")

    def run(self, deadline: float, think: float) -> None:
        names, weights = list(ACTIONS), list(ACTIONS.values())
        try:
            self.connect()
            while time.monotonic() < deadline:
                action = random.choices(names, weights)[0]
                try:
                    getattr(self, action)()
                    self.read(random.uniform(0.5, 1.5) * think)
                except OSError as err:  # a timeout or a dropped connection: counted, reconnect
                    self.soak.count(f"{action}:{type(err).__name__}")
                    self.connect()
            self.read(1.0)
        except Exception as err:  # a broken user is reported, the others go on
            self.soak.count(f"broken:{type(err).__name__}")
        finally:
            if self.client is not None:
                self.client.close()


class Soak:
    def __init__(self, args):
        self.args = args
        self.pg = None
        db = args.database_url
        if not db:
            self.pg = Postgres()
            db = self.pg.create_database()
        self.server = ImServer(db, max_connections=args.users * 2 + 100).start(timeout=120)
        self.counts: Counter = Counter()
        self.samples: list[dict] = []
        prefix = "soak" + uuid.uuid4().hex[:6]
        self.uids = [f"{prefix}_{i}" for i in range(args.users)]
        for at in range(0, len(self.uids), 1000):
            self.server.admin().admin("POST", "/users/bulk", {"users": [
                {"uid": u, "pwd": PASSWORD} for u in self.uids[at:at + 1000]]})
        creator = self.server.http()
        creator.login(self.uids[0], PASSWORD)
        self.gids = [creator.qid("QID_IM_SET_GROUP", gname=f"soak {i}", type="2")["result"]
                     for i in range(max(1, args.users // 50))]

    def count(self, what: str) -> None:
        self.counts[what] += 1

    def count_stored(self, n: int) -> None:
        self.counts["stored_messages"] = n

    def sample(self, started: float) -> dict:
        pid = self.server.proc.pid
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
        point = {"t": round(time.monotonic() - started, 1), "rss_mb": round(rss_kb / 1024, 1),
                 "fds": len(os.listdir(f"/proc/{pid}/fd")), "actions": sum(self.counts.values())}
        self.samples.append(point)
        print(json.dumps(point), flush=True)
        return point

    def run(self) -> int:
        started = time.monotonic()
        deadline = started + self.args.duration
        users = [User(self, uid) for uid in self.uids]
        baseline = self.sample(started)
        greenlets = []
        for user in users:  # ramp up over a few seconds rather than all at once
            greenlets.append(gevent.spawn(user.run, deadline, self.args.think))
            gevent.sleep(self.args.ramp / len(users))
        while not all(g.dead for g in greenlets):
            self.sample(started)
            gevent.joinall(greenlets, timeout=self.args.sample_every)
        gevent.sleep(2)  # let the server notice the last disconnections
        end = self.sample(started)
        violations = self.check(users)
        summary = {"users": self.args.users, "duration_s": self.args.duration,
                   "counts": dict(sorted(self.counts.items())), "violations": violations,
                   "rss_mb": self._trend("rss_mb"), "fds": self._trend("fds"),
                   "idle_before": baseline, "idle_after": end,
                   "server_alive": self.server.proc.poll() is None}
        print(json.dumps(summary, indent=1))
        return 1 if violations or not summary["server_alive"] else 0

    def _trend(self, key: str) -> dict:
        """While users are active after the ramp-up: first, max and last value, and the means of
        the first and last quarters."""
        active = [s[key] for s in self.samples if self.args.ramp <= s["t"] <= self.args.duration]
        values = active or [s[key] for s in self.samples]
        quarter = max(1, len(values) // 4)
        return {"first": values[0], "max": max(values), "last": values[-1],
                "first_quarter_mean": round(sum(values[:quarter]) / quarter, 1),
                "last_quarter_mean": round(sum(values[-quarter:]) / quarter, 1)}

    def check(self, users: list[User]) -> list[str]:
        violations = []
        internal = sum(n for k, n in self.counts.items() if k.endswith((":internal", ":500")))
        broken = sum(n for k, n in self.counts.items() if k.startswith("broken"))
        if internal:
            violations.append(f"{internal} requests answered internal / 500")
        if broken:
            violations.append(f"{broken} users gave up (see the broken:* counts)")
        stored = {("0", m): s for m, s in self.server.sql(
            "SELECT msgid, from_seq FROM tp_im_message WHERE msgfrom = ANY(%s)", (self.uids,))}
        stored.update({("1", m): s for m, s in self.server.sql(
            "SELECT msgid, seq FROM tp_im_message_group WHERE gid = ANY(%s)", (self.gids,))})
        lost = sum(1 for u in users for key, seq in u.acked.items() if stored.get(key) != seq)
        if lost:
            violations.append(f"{lost} ACKed messages not stored at their ACKed position")
        seen = {u.uid: u.seen for u in users}
        unseen_marked = 0
        for sender, msgid, to, received in self.server.sql(
                "SELECT msgfrom, msgid, msgto, received FROM tp_im_message WHERE msgfrom = ANY(%s)",
                (self.uids,)):
            # delivered (seen live, receipted) or offline (still unreceived): never marked unseen
            unseen_marked += bool(received) and (sender, msgid) not in seen[to]
        self.count_stored(len(stored))
        if unseen_marked:
            violations.append(f"{unseen_marked} messages marked received that were never seen")
        return violations

    def close(self) -> None:
        self.server.kill()
        if self.pg is not None:
            self.pg.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of activity")
    p.add_argument("--think", type=float, default=2.0, help="mean seconds between a user's actions")
    p.add_argument("--ramp", type=float, default=10.0, help="seconds to bring every user in")
    p.add_argument("--sample-every", type=float, default=10.0)
    p.add_argument("--database-url", default="", help="default: an embedded PostgreSQL of its own")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # still stop the server and database
    soak = Soak(args)
    try:
        return soak.run()
    finally:
        soak.close()


if __name__ == "__main__":
    sys.exit(main())
