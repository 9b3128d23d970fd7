"""Cluster mode: several nodes share a registry of online resources and a message bus in Redis.

Redis keys (`im:` prefix):
- `im:u:<uid>` hash: resource → "<node>|<show or ''>", one field per logged-in connection;
- `im:nu:<node>` set: the uids with a connection on that node (what a reaper must clean);
- `im:node:<node>`: exists while the node is alive (refreshed every HEARTBEAT_S, TTL NODE_TTL_S);
- `im:nodes` set: nodes that registered, so that any node can reap a dead one.
Channels: `im:reg` (registry changes, mirrored by every process), `im:events` (the router's
cross-process events), `im:n:<node>` (frames and kicks for that node's connections).

Every process keeps a mirror of the other nodes' entries, so looking up a recipient never costs a
Redis round trip and local deliveries never touch Redis. Frames for remote connections, registry
updates and events go through one ordered queue, flushed once per event-loop turn in one write
on a dedicated connection, with the frames for one node in one publish. That connection and the
subscription speak RESP through `Resp` (redis-py connects and authenticates them): redis-py's
per-command and per-message overhead cost more than the rest of a cross-node message. Registry
updates are Lua scripts that compare the owning node, so a stale node can never remove or
overwrite a newer login's entry.

Event handlers (`registry.on_event`) run in every process and act on that process's own sessions:
while one runs, `connections` and `deliver` see local connections only. Elsewhere they see the
whole cluster, remote connections as `RemoteConnection` proxies.

When Redis is unreachable, local sessions keep working; remote deliveries return False (the
message is stored, the recipient fetches it); events wait in a bounded queue. On reconnect the
node re-registers its sessions and reloads its mirror; features drop their caches on the local
`resync` event, since invalidations may have been missed.
"""

import contextvars
import hashlib
import logging
import os
import secrets
import struct
import time
from collections import deque

import gevent
import orjson
import redis
from gevent import monkey
from gevent.event import Event
from redis.backoff import NoBackoff
from redis.retry import Retry

from im.protocol import encode
from im.tcp.router import Router

log = logging.getLogger("im.router.redis")

HEARTBEAT_S = 1.0
NODE_TTL_S = 5
MAX_PENDING_EVENTS = 10_000
REG, EVENTS, NODES = b"im:reg", b"im:events", "im:nodes"

_local_only: contextvars.ContextVar[bool] = contextvars.ContextVar("im_local_only", default=False)

# KEYS: im:u:<uid>, im:nu:<node>. ARGV: uid, res, node, show, mode.
# attach: take the resource, kicking its holder on another node ("conflict");
# claim: take it unless another node holds it (returns 0); presence: update it if we hold it.
SET_ENTRY = """
local prev = redis.call('HGET', KEYS[1], ARGV[2])
local owner = prev and string.match(prev, '^[^|]*') or nil
local mode = ARGV[5]
if mode == 'presence' and owner ~= ARGV[3] then return 0 end
if mode == 'claim' and owner and owner ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '|' .. ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PUBLISH', 'im:reg', cjson.encode({'S', ARGV[1], ARGV[2], ARGV[3], ARGV[4]}))
if mode == 'attach' and owner and owner ~= ARGV[3] then
  local kick = cjson.encode({ARGV[1], ARGV[2], 'conflict'})
  redis.call('PUBLISH', 'im:n:' .. owner, 'K' .. struct.pack('>H', #kick) .. kick)
end
return 1
"""

# KEYS: im:u:<uid>, im:nu:<node>. ARGV: uid, res, node. Removes the entry if node still holds it.
DEL_ENTRY = """
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if not cur or string.match(cur, '^[^|]*') ~= ARGV[3] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[2])
local keep = false
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  if string.match(v, '^[^|]*') == ARGV[3] then keep = true break end
end
if not keep then redis.call('SREM', KEYS[2], ARGV[1]) end
redis.call('PUBLISH', 'im:reg', cjson.encode({'D', ARGV[1], ARGV[2], ARGV[3]}))
return 1
"""

# KEYS: im:node:<node>, im:nu:<node>, im:nodes. ARGV: node, quiet.
# Not quiet: reap a node whose heartbeat expired. Quiet: a node dropping its own stale entries
# before it re-registers its sessions (no node_down for them).
REAP = """
if ARGV[2] == '0' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local gone = {}
for _, uid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = 'im:u:' .. uid
  local entries = redis.call('HGETALL', key)
  for i = 1, #entries, 2 do
    local node, show = string.match(entries[i + 1], '^([^|]*)|(.*)$')
    if node == ARGV[1] then
      redis.call('HDEL', key, entries[i])
      table.insert(gone, {uid, entries[i], show})
    end
  end
end
redis.call('DEL', KEYS[2])
if ARGV[2] == '0' then redis.call('SREM', KEYS[3], ARGV[1]) end
if #gone > 0 then
  redis.call('PUBLISH', 'im:reg', cjson.encode({'N', ARGV[1], gone, ARGV[2]}))
end
return #gone
"""


class Resp:
    """RESP2 over a connected socket: packed commands out, parsed replies in (several per read)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.pos = 0    # parsed up to here
        self.start = 0  # the reply being parsed starts here

    @staticmethod
    def pack(commands: list[tuple]) -> bytes:
        out = []
        for args in commands:
            out.append(b"*%d\r\n" % len(args))
            for arg in args:
                if isinstance(arg, str):
                    arg = arg.encode("utf-8", "surrogatepass")
                elif isinstance(arg, int):
                    arg = b"%d" % arg
                out.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
        return b"".join(out)

    def send(self, commands: list[tuple]) -> None:
        self.sock.sendall(self.pack(commands))

    def reply(self):
        """The next reply: int, bytes, None, list, or a ResponseError (returned, not raised).
        A timeout mid-reply leaves it to be parsed again from its start."""
        self.start = self.pos
        try:
            return self._parse()
        except BaseException:
            self.pos = self.start
            raise

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise redis.ConnectionError("connection closed by redis")
        self.buf = self.buf[self.start:] + data
        self.pos -= self.start
        self.start = 0

    def _parse(self):
        end = self.buf.find(b"\r\n", self.pos)
        while end < 0:
            self._fill()
            end = self.buf.find(b"\r\n", self.pos)
        kind, value = self.buf[self.pos:self.pos + 1], self.buf[self.pos + 1:end]
        self.pos = end + 2
        if kind == b"$":
            n = int(value)
            if n < 0:
                return None
            while len(self.buf) < self.pos + n + 2:
                self._fill()
            self.pos += n + 2
            return self.buf[self.pos - n - 2:self.pos - 2]
        if kind == b":":
            return int(value)
        if kind in (b"*", b">"):
            n = int(value)
            return None if n < 0 else [self._parse() for _ in range(n)]
        if kind == b"+":
            return value
        if kind == b"-":
            return redis.ResponseError(value.decode(errors="replace"))
        raise redis.ConnectionError(f"unexpected reply {kind!r}")


def node_channel(node: str) -> bytes:
    return f"im:n:{node}".encode()


def _user_key(uid: str) -> str:
    return f"im:u:{uid}"


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


# --- node channel messages: a sequence of ops ----------------------------------------
# F: u32 frame length, frame, u32 target count, targets (u16 len + uid, u16 len + res)
# K: u16 length, JSON [uid, res, reason]  (also built by the SET_ENTRY script)

def pack_kick(uid: str, res: str, reason: str) -> bytes:
    body = orjson.dumps([uid, res, reason])
    return b"K" + struct.pack(">H", len(body)) + body


class FrameBatch:
    """One frame for several (uid, res) targets on one node."""
    __slots__ = ("data", "targets")

    def __init__(self, data: bytes):
        self.data = data
        self.targets: list[bytes] = []

    def add(self, uid: str, res: str) -> None:
        u, r = _text(uid), _text(res)
        self.targets.append(struct.pack(">H", len(u)) + u + struct.pack(">H", len(r)) + r)

    def pack(self) -> bytes:
        return b"".join((b"F", struct.pack(">I", len(self.data)), self.data,
                         struct.pack(">I", len(self.targets)), *self.targets))


class NodeMessage:
    """The frames for one node queued in one event-loop turn: one publish, one pub/sub read
    there. A frame sent to several of the node's connections in a row is packed once."""
    __slots__ = ("batches",)

    def __init__(self):
        self.batches: list[FrameBatch] = []

    def add(self, data: bytes, uid: str, res: str) -> None:
        if not self.batches or self.batches[-1].data is not data:
            self.batches.append(FrameBatch(data))
        self.batches[-1].add(uid, res)

    def pack(self) -> bytes:
        return b"".join([batch.pack() for batch in self.batches])


def unpack(message: bytes):
    """Yield ("F", frame, [(uid, res)]) and ("K", uid, res, reason) ops of a node message."""
    pos, end = 0, len(message)
    while pos < end:
        kind = message[pos:pos + 1]
        if kind == b"K":
            (n,) = struct.unpack_from(">H", message, pos + 1)
            uid, res, reason = orjson.loads(message[pos + 3:pos + 3 + n])
            pos += 3 + n
            yield "K", uid, res, reason
        elif kind == b"F":
            (n,) = struct.unpack_from(">I", message, pos + 1)
            data = message[pos + 5:pos + 5 + n]
            pos += 5 + n
            (count,) = struct.unpack_from(">I", message, pos)
            pos += 4
            targets = []
            for _ in range(count):
                pos, uid = _read_text(message, pos)
                pos, res = _read_text(message, pos)
                targets.append((uid, res))
            yield "F", data, targets
        else:
            raise ValueError(f"bad op {kind!r}")


def _read_text(message: bytes, pos: int) -> tuple[int, str]:
    (n,) = struct.unpack_from(">H", message, pos)
    return pos + 2 + n, message[pos + 2:pos + 2 + n].decode("utf-8", "surrogatepass")


class RemoteConnection:
    """A connection on another node, as features see it: sending publishes to that node."""
    token_hash = None
    addr = ""
    closing = False

    def __init__(self, router: "RedisRouter", uid: str, res: str, node: str, show: str):
        self.router, self.uid, self.res, self.node = router, uid, res, node
        self.presence = show or None
        self.state: dict = {}

    def __repr__(self) -> str:
        return f"<RemoteConnection {self.uid}/{self.res} on {self.node}>"

    def send(self, msgtype: int, body: dict) -> bool:
        return self.send_raw(encode(msgtype, body))

    def send_raw(self, data: bytes) -> bool:
        return self.router.send_remote(self.node, self.uid, self.res, data)

    def kick(self, reason: str) -> None:
        self.router.kick_remote(self.node, self.uid, self.res, reason)


class RedisRouter(Router):
    def __init__(self, node_id: str, redis_url: str, sessions: bool):
        """`sessions`: this process hosts TCP sessions (heartbeat, registry entries); any
        gevent process subscribes to events, a one-shot command only publishes."""
        # a fresh identity per process start: a restarted node never inherits stale entries
        node = f"{node_id.replace('|', '_')}/{os.getpid()}-{secrets.token_hex(3)}"
        super().__init__(node)
        self.sessions = sessions
        self.origin = node.encode()
        options = {"socket_connect_timeout": 2, "retry": Retry(NoBackoff(), 0), "protocol": 2}
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, **options)
        self.sub_redis = redis.Redis.from_url(redis_url, socket_timeout=None,
                                              socket_keepalive=True, **options)
        self.scripts = {name: (text, hashlib.sha1(text.encode()).hexdigest()) for name, text in
                        (("set", SET_ENTRY), ("del", DEL_ENTRY), ("reap", REAP))}
        self.conn = self.redis.connection_pool.make_connection()  # the flusher's own
        self.resp: Resp | None = None  # over self.conn's socket while connected
        self.remote: dict[str, dict[str, tuple[str, str]]] = {}  # uid → res → (node, show)
        self.up = False
        self.ready = Event()  # the mirror has been loaded once
        self._queue: list = []  # ordered: (kind, callable → command args, on_result | None)
        self._open: dict[str, NodeMessage] = {}  # node → message still accepting frames
        self._pending_events: deque = deque(maxlen=MAX_PENDING_EVENTS)
        self._wake = Event()
        self._greenlets: list = []
        if not monkey.is_module_patched("socket"):
            self.up = True  # a one-shot command (`im user ...`): it only publishes, at close
            return
        self._greenlets = [gevent.spawn(self._flush_loop), gevent.spawn(self._subscribe_loop)]
        if sessions:
            self._greenlets.append(gevent.spawn(self._heartbeat_loop))
        self.ready.wait(2.0)

    # --- lookups: local sessions plus the mirror -----------------------------------------
    def connections(self, uid: str) -> list:
        local = super().connections(uid)
        if _local_only.get():
            return local
        entries = self.remote.get(uid)
        if not entries:
            return local
        return local + [RemoteConnection(self, uid, res, node, show)
                        for res, (node, show) in list(entries.items())]

    def is_online(self, uid: str) -> bool:
        return super().is_online(uid) or (not _local_only.get() and uid in self.remote)

    def deliver(self, uid: str, data: bytes, res: str | None = None, exclude=None) -> int:
        sent = super().deliver(uid, data, res, exclude)
        entries = None if _local_only.get() else self.remote.get(uid)
        if not entries:
            return sent
        skip = (exclude.res if isinstance(exclude, RemoteConnection) and exclude.uid == uid
                else None)
        for r, (node, _) in list(entries.items()):
            if (not res or r == res) and r != skip and self.send_remote(node, uid, r, data):
                sent += 1
        return sent

    def counts(self) -> dict:
        """This process's sessions, plus users and connections per node across the cluster."""
        counts = super().counts()
        per_node: dict[str, list] = {self.node_id: [set(self.users), counts["connections"]]}
        for uid, entries in list(self.remote.items()):
            for node, _ in entries.values():
                users_conns = per_node.setdefault(node, [set(), 0])
                users_conns[0].add(uid)
                users_conns[1] += 1
        counts["nodes"] = {node: {"users": len(u), "connections": c}
                           for node, (u, c) in per_node.items()}
        return counts

    # --- this node's sessions -----------------------------------------------------------
    def attach(self, conn) -> object | None:
        old = super().attach(conn)
        self._queue_entry("attach", conn)
        return old

    def detach(self, conn) -> None:
        resources = self.users.get(conn.uid)
        if resources is not None and resources.get(conn.res) is conn:
            super().detach(conn)
            self._command(lambda: self._script("del", [_user_key(conn.uid), f"im:nu:{self.node_id}"],
                                               conn.uid, conn.res, self.node_id))

    def presence_changed(self, conn) -> None:
        if self.users.get(conn.uid, {}).get(conn.res) is conn:
            self._queue_entry("presence", conn)

    def _queue_entry(self, mode: str, conn, on_result=None) -> None:
        uid, res, show = conn.uid, conn.res, conn.presence or ""
        self._command(lambda: self._script("set", [_user_key(uid), f"im:nu:{self.node_id}"],
                                           uid, res, self.node_id, show, mode), on_result)

    def _script(self, name: str, keys: list, *args) -> tuple:
        return ("EVALSHA", self.scripts[name][1], len(keys), *keys, *args)

    # --- outgoing: one ordered queue, one pipeline per event-loop turn ------------------
    def _command(self, make, on_result=None, kind: str = "registry") -> None:
        """Queue one Redis command; `make()` builds its arguments at flush time."""
        self._queue.append((kind, make, on_result))
        self._open.clear()  # later frames must not overtake this command
        self._wake.set()

    def send_remote(self, node: str, uid: str, res: str, data: bytes) -> bool:
        """Queue a frame for a connection on another node; False while Redis is unreachable."""
        if not self.up:
            return False
        message = self._open.get(node)
        if message is None:
            message = self._open[node] = NodeMessage()
            channel = node_channel(node)
            self._queue.append(("frames", lambda: ("PUBLISH", channel, message.pack()), None))
            self._wake.set()
        message.add(data, uid, res)
        return True

    def kick_remote(self, node: str, uid: str, res: str, reason: str) -> None:
        message, channel = pack_kick(uid, res, reason), node_channel(node)
        self._command(lambda: ("PUBLISH", channel, message), kind="kick")

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Run the queued commands in one pipeline; while Redis is down only events wait."""
        queue, self._queue = self._queue, []
        self._open.clear()
        if not self.up:
            self._pending_events.extend(c for c in queue if c[0] == "event")
            return
        if self._pending_events:
            queue = [*self._pending_events, *queue]
            self._pending_events.clear()
        if not queue:
            return
        try:
            results = self._execute([make() for _, make, _ in queue])
        except (redis.RedisError, OSError) as err:
            self._pending_events.extend(c for c in queue if c[0] == "event")
            self._lost(err)
            return
        for (kind, _, on_result), result in zip(queue, results):
            if isinstance(result, Exception):
                log.error("redis command failed (%s): %s", kind, result)
            elif on_result is not None:
                on_result(result)

    def _execute(self, commands: list[tuple]) -> list:
        """Send the commands in one write and read every reply (an error reply is returned)."""
        try:
            if self.resp is None:
                self.conn.connect()
                self.resp = Resp(self.conn._sock)
            self.resp.send(commands)
            return [self.resp.reply() for _ in commands]
        except BaseException:
            self.resp = None
            self.conn.disconnect()
            raise

    # --- cross-process events -----------------------------------------------------------
    def emit(self, op: str, **payload) -> None:
        event = {"op": op, **payload}
        self.handle(event)
        message = orjson.dumps({**event, "_origin": self.node_id})
        self._command(lambda: ("PUBLISH", EVENTS, message), kind="event")

    def handle(self, event: dict) -> None:
        """Run the event's handlers on this process's own sessions."""
        token = _local_only.set(True)
        try:
            super().handle(event)
        finally:
            _local_only.reset(token)

    # --- incoming: the subscription and the mirror --------------------------------------
    def _subscribe_loop(self) -> None:
        delay = 0.2
        while True:
            conn = self.sub_redis.connection_pool.make_connection()
            try:
                conn.connect()
                resp = Resp(conn._sock)
                self._subscribe(resp)
                self._connected()
                delay = 0.2
                self._listen(resp)
            except gevent.GreenletExit:
                conn.disconnect()
                raise
            except Exception as err:  # whatever broke, start over: reconnect and resync
                if not isinstance(err, (redis.RedisError, OSError)):
                    log.exception("redis subscription failed")
                self._lost(err)
            conn.disconnect()
            gevent.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _subscribe(self, resp: Resp) -> None:
        """Subscribe and wait until Redis confirms, so that loading the mirror afterwards
        cannot miss a change published in between."""
        channels = (REG, EVENTS, node_channel(self.node_id))
        resp.sock.settimeout(NODE_TTL_S)
        resp.send([("SUBSCRIBE", *channels)])
        confirmed = 0
        while confirmed < len(channels):
            reply = resp.reply()
            if reply[0] == b"message":
                self._on_message(reply[1], reply[2])
            confirmed += reply[0] == b"subscribe"

    def _listen(self, resp: Resp) -> None:
        """Handle messages until Redis is lost (here or by another greenlet); an idle link is
        pinged, and one silent for long counts as lost."""
        resp.sock.settimeout(HEARTBEAT_S)
        last_seen = time.monotonic()
        while self.up:
            try:
                reply = resp.reply()
            except TimeoutError:
                if time.monotonic() - last_seen > NODE_TTL_S:
                    raise redis.ConnectionError("subscription silent, reconnecting") from None
                resp.send([("PING",)])
                continue
            last_seen = time.monotonic()
            if reply[0] == b"message":
                self._on_message(reply[1], reply[2])

    def _connected(self) -> None:
        """(Re)subscribed: reload the mirror, re-register this node's sessions, resume."""
        first = not self.ready.is_set()
        for text, _ in self.scripts.values():
            self.redis.script_load(text)
        self._load_mirror()
        self._queue = [c for c in self._queue if c[0] == "event"]
        self._open.clear()
        if self.sessions:
            self._reassert()
        self.up = True
        self.ready.set()
        self._wake.set()
        log.info("redis %s, node %s", "connected" if first else "reconnected", self.node_id)
        if not first:
            self.handle({"op": "resync"})

    def _lost(self, err: Exception) -> None:
        if self.up:
            log.warning("redis unreachable, cross-node delivery paused: %s", err)
        self.up = False  # the subscriber notices within HEARTBEAT_S, reconnects and resyncs

    def _load_mirror(self) -> None:
        mirror: dict[str, dict[str, tuple[str, str]]] = {}
        keys = list(self.redis.scan_iter(match="im:u:*", count=1000))
        for start in range(0, len(keys), 1000):
            pipe = self.redis.pipeline(transaction=False)
            chunk = keys[start:start + 1000]
            for key in chunk:
                pipe.hgetall(key)
            for key, entries in zip(chunk, pipe.execute()):
                uid = key[5:].decode()
                for res, value in entries.items():
                    node, _, show = value.decode().partition("|")
                    if node != self.node_id:
                        mirror.setdefault(uid, {})[res.decode("utf-8", "surrogatepass")] = (node, show)
        self.remote = mirror

    def _on_message(self, channel: bytes, data: bytes) -> None:
        try:
            if channel == REG:
                self._on_registry(orjson.loads(data))
            elif channel == EVENTS:
                event = orjson.loads(data)
                if event.pop("_origin", None) != self.node_id:
                    self.received(event)
            else:
                self._on_node_message(data)
        except (ValueError, TypeError, struct.error):
            log.exception("bad message on %s", channel.decode(errors="replace"))

    def _on_registry(self, change: list) -> None:
        kind = change[0]
        if kind == "S":
            _, uid, res, node, show = change
            if node == self.node_id:
                self._forget(uid, res, None)
            else:
                self.remote.setdefault(uid, {})[res] = (node, show)
        elif kind == "D":
            _, uid, res, node = change
            self._forget(uid, res, node)
        elif kind == "N":
            _, node, gone, quiet = change
            if node == self.node_id:
                if quiet == "0":
                    log.warning("node %s was reaped by the cluster, re-registering", node)
                    self._reassert()
                return
            for uid, res, _ in gone:
                self._forget(uid, res, node)
            if quiet == "0":
                log.warning("node %s is gone: %d sessions dropped", node, len(gone))
                self.handle({"op": "node_down", "node": node, "sessions": gone})

    def _forget(self, uid: str, res: str, node: str | None) -> None:
        entries = self.remote.get(uid)
        if entries is None or res not in entries:
            return
        if node is None or entries[res][0] == node:
            del entries[res]
            if not entries:
                del self.remote[uid]

    def _on_node_message(self, data: bytes) -> None:
        for op in unpack(data):
            if op[0] == "F":
                _, frame, targets = op
                for uid, res in targets:
                    super().deliver(uid, frame, res=res)
            else:
                _, uid, res, reason = op
                conn = self.users.get(uid, {}).get(res)
                if conn is not None:
                    conn.kick(reason)

    # --- liveness: heartbeat, reaping dead nodes, re-registering after an outage --------
    def _beat(self) -> tuple:
        return ("SET", f"im:node:{self.node_id}", b"1", "EX", NODE_TTL_S)

    def _join(self) -> tuple:
        return ("SADD", NODES, self.node_id)

    def _reap(self, node: str, quiet: bool) -> tuple:
        return self._script("reap", [f"im:node:{node}", f"im:nu:{node}", NODES],
                            node, "1" if quiet else "0")

    def _reap_self(self) -> tuple:
        return self._reap(self.node_id, quiet=True)

    def _reassert(self) -> None:
        """Queue: heartbeat, drop this node's stale entries, claim every local session again."""
        self._command(self._beat)
        self._command(self._join)
        self._command(self._reap_self)
        for conn in list(self.all_connections()):
            self._queue_entry("claim", conn, lambda ok, conn=conn: ok or conn.kick("conflict"))

    def _heartbeat_loop(self) -> None:
        while True:
            gevent.sleep(HEARTBEAT_S)
            if not self.up:
                continue
            try:
                pipe = self.redis.pipeline(transaction=False)
                for command in (self._beat(), self._join(), ("SMEMBERS", NODES)):
                    pipe.execute_command(*command)
                nodes = pipe.execute()[-1]
                for node in {n.decode() for n in nodes} - {self.node_id}:
                    self.redis.execute_command(*self._reap(node, quiet=False))
            except (redis.RedisError, OSError) as err:
                self._lost(err)

    def close(self) -> None:
        """Leave the cluster: unregister this node's sessions and stop."""
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        if self.up and self.sessions:
            self._command(self._reap_self)
            self._command(lambda: ("DEL", f"im:node:{self.node_id}"))
            self._command(lambda: ("SREM", NODES, self.node_id))
        self.flush()
        self.resp = None
        self.conn.disconnect()
        self.redis.close()
        self.sub_redis.close()
