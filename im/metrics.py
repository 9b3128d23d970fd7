"""The process's Prometheus metrics (exported as GET /metrics by im/web/ops.py).

Counters and histograms that features bump themselves live here as module objects (`STORED_DIRECT`,
`ACK_LATENCY` in im/features/chat.py, `TOKEN_LOGINS`, `LOGIN_FAILURES` in accounts, `HANDLER_SECONDS`
in im/tcp/dispatch.py). What the process already counts — the router's
sessions, the TCP server's `stats`, the pool's gauges — is read at scrape time by a collector,
so the hot paths pay nothing for it. Each process has its own registry: with several gunicorn
workers a scrape sees one worker; the TCP process holds every session.
"""

import os
import time
from bisect import bisect_left
from collections.abc import Iterator

import prometheus_client.metrics
import prometheus_client.values
from gevent import monkey
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.process_collector import ProcessCollector

from im import protocol

# Every observation takes its value's lock. Under monkey-patching that is gevent's lock, which
# cost more than the rest of an observation (py-spy, chat at 6,000 msg/s); a native lock is
# cheap, never held across a greenlet switch, and also right for the password-hashing threads.
prometheus_client.values.Lock = prometheus_client.metrics.Lock = monkey.get_original("threading", "Lock")

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
STARTED = time.time()

MESSAGES_STORED = Counter("im_messages_stored", "chat messages committed to the database",
                          ["kind"], registry=REGISTRY)
# the labelled children, made once: `labels()` costs twice an `inc()` (and per batch at low rates)
STORED_DIRECT, STORED_GROUP = MESSAGES_STORED.labels("chat"), MESSAGES_STORED.labels("group")
_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)


class _Buckets:
    __slots__ = ("counts", "sum")

    def __init__(self, size: int):
        self.counts = [0] * size
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(_BUCKETS, value)] += 1  # the first bound >= value: `le`
        self.sum += value


class LoopHistogram:
    """A histogram for the per-frame paths, observed only from the event loop's thread:
    plain lists and a bisect, where prometheus_client takes a lock and walks its buckets per
    observation (6x the cost here; ~13% of the server's CPU in chat at 3,000 msg/s, py-spy).
    Exported at scrape time."""

    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...] = ()):
        self.name, self.doc, self.labelnames = name, doc, labelnames
        self._children: dict[tuple, _Buckets] = {}
        if not labelnames:
            self.observe = self.labels().observe
        REGISTRY.register(self)

    def labels(self, *values: str) -> _Buckets:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Buckets(len(_BUCKETS) + 1)
        return child

    def collect(self) -> Iterator:
        family = HistogramMetricFamily(self.name, self.doc, labels=list(self.labelnames))
        for values, child in sorted(self._children.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*map(str, _BUCKETS), "+Inf"), child.counts):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(list(values), buckets, child.sum)
        yield family


ACK_LATENCY = LoopHistogram("im_message_ack_latency_seconds",
                            "IM_MESSAGE: from the frame's arrival to its ACK, after the commit")
HANDLER_SECONDS = LoopHistogram("im_handler_seconds", "time a TCP frame's handler ran, by msgtype",
                                ("type",))
LOGINS = Counter("im_logins", "successful logins", ["method"], registry=REGISTRY)
PASSWORD_LOGINS, TOKEN_LOGINS = LOGINS.labels("password"), LOGINS.labels("token")
LOGIN_FAILURES = Counter("im_login_failures", "failed password logins (TCP and HTTP)",
                         registry=REGISTRY)
EVENTS_RECEIVED = Counter("im_events_received", "cross-process events taken from other "
                          "processes, by op (bumped by the router)", ["op"], registry=REGISTRY)

TYPE_NAMES = {value: name for name, value in vars(protocol).items()
              if name.startswith("IM_") and isinstance(value, int)}
CONTENT_TYPE = CONTENT_TYPE_LATEST


def type_name(msgtype: int) -> str:
    """A bounded label for a msgtype: its protocol name, or "other"."""
    return TYPE_NAMES.get(msgtype, "other")


_handler_children: dict = {}


def handler_seconds(msgtype: int):
    """HANDLER_SECONDS' child for a msgtype, cached: `labels()` per frame cost more than the
    observation itself."""
    child = _handler_children.get(msgtype)
    if child is None:
        child = HANDLER_SECONDS.labels(type_name(msgtype))
        if len(_handler_children) < 1024:  # unknown msgtypes all map to "other"; bound the cache
            _handler_children[msgtype] = child
    return child


class _RuntimeCollector:
    """Gauges and counters read from the runtime at scrape time."""

    def collect(self) -> Iterator:
        from im import runtime
        yield from _sessions(runtime)
        yield from _tcp(runtime.tcp_server)
        yield from _pool(runtime.db)
        info = GaugeMetricFamily("im_info", "version and node of this process", labels=["version", "node"])
        info.add_metric([_version(), getattr(runtime.router, "node_id", "")], 1)
        yield info


def _sessions(runtime) -> Iterator:
    counts = runtime.router.counts() if runtime.router is not None else {"users": 0, "connections": 0}
    yield GaugeMetricFamily("im_online_users", "users with a logged-in connection in this process",
                            value=counts["users"])
    yield GaugeMetricFamily("im_sessions", "logged-in connections in this process",
                            value=counts["connections"])


def _tcp(server) -> Iterator:
    if server is None:
        return
    stats = server.stats
    yield GaugeMetricFamily("im_connections", "open TCP connections (logged in or not)",
                            value=len(server.connections))
    yield CounterMetricFamily("im_connections_opened", "TCP connections accepted",
                              value=stats["connections_opened"])
    yield CounterMetricFamily("im_outbox_drops", "clients disconnected for a full outbox",
                              value=stats["outbox_drops"])
    frames = CounterMetricFamily("im_frames", "TCP frames received (in) and queued to send (out)",
                                 labels=["direction", "type"])
    by_label: dict = {}
    for key, count in list(stats.items()):
        if isinstance(key, tuple):
            direction, msgtype = key
            if isinstance(msgtype, bytes):
                msgtype = int.from_bytes(msgtype, "big")
            label = (direction, type_name(msgtype))
            by_label[label] = by_label.get(label, 0) + count
    for label, count in sorted(by_label.items()):
        frames.add_metric(list(label), count)
    yield frames


def _pool(pool) -> Iterator:
    if pool is None:
        return
    yield GaugeMetricFamily("im_db_pool_size", "database connections allowed", value=pool.size)
    yield GaugeMetricFamily("im_db_pool_in_use", "database connections borrowed", value=pool.in_use)
    yield GaugeMetricFamily("im_db_pool_waiting", "greenlets waiting for a database connection",
                            value=pool.waiting)


def _version() -> str:
    from im import __version__
    return __version__


REGISTRY.register(_RuntimeCollector())


def exposition() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)


def snapshot() -> dict:
    """Counts for `im status`: sessions, connections, pool, uptime, pid."""
    from im import runtime
    counts = runtime.router.counts() if runtime.router is not None else {"users": 0, "connections": 0}
    pool = runtime.db
    server = runtime.tcp_server
    return {
        "pid": os.getpid(),
        "uptime_s": int(time.time() - STARTED),
        "online_users": counts["users"],
        "sessions": counts["connections"],
        "tcp_connections": len(server.connections) if server is not None else None,
        "pool": {"size": pool.size, "in_use": pool.in_use, "waiting": pool.waiting} if pool else None,
    }
