"""Who is online where: uid → resource → connection, plus a cross-process event path.

`Router` knows this process's logged-in connections. Events that other processes must see
(kicks, cache invalidations, deliveries requested by HTTP workers) go through `emit`, which
runs the registered handlers here and publishes the event to the other processes through a
bridge: PostgreSQL LISTEN/NOTIFY on one node (im/tcp/router/pg.py). In cluster mode the Redis
router (im/tcp/router/redis.py) keeps the same interface across nodes.
"""

import logging
import socket
from collections.abc import Iterable, Iterator

from im import metrics, registry

log = logging.getLogger("im.router")


class Router:
    def __init__(self, node_id: str, bridge=None):
        self.node_id = node_id
        self.users: dict[str, dict[str, object]] = {}
        self.bridge = bridge

    # --- this process's sessions -------------------------------------------------------
    def attach(self, conn) -> object | None:
        """Register a logged-in connection; returns the one it replaces (same uid and res)."""
        resources = self.users.setdefault(conn.uid, {})
        old = resources.get(conn.res)
        resources[conn.res] = conn
        return old if old is not conn else None

    def detach(self, conn) -> None:
        resources = self.users.get(conn.uid)
        if resources is not None and resources.get(conn.res) is conn:
            del resources[conn.res]
            if not resources:
                del self.users[conn.uid]

    def connections(self, uid: str) -> list:
        resources = self.users.get(uid)
        return list(resources.values()) if resources else []

    def all_connections(self) -> Iterator:
        for resources in list(self.users.values()):
            yield from list(resources.values())

    def is_online(self, uid: str) -> bool:
        return uid in self.users

    def deliver(self, uid: str, data: bytes, res: str | None = None, exclude=None) -> int:
        """Queue an encoded frame to uid's connections (only `res` if given); returns count."""
        resources = self.users.get(uid)
        if not resources:
            return 0
        if res:
            conn = resources.get(res)
            targets = [conn] if conn is not None else []
        else:
            targets = list(resources.values())
        sent = 0
        for conn in targets:
            if conn is not exclude and conn.send_raw(data):
                sent += 1
        return sent

    def deliver_many(self, uids: Iterable[str], data: bytes, exclude=None) -> int:
        return sum(self.deliver(uid, data, exclude=exclude) for uid in uids)

    def presence_changed(self, conn) -> None:
        """`conn.presence` changed; a cluster router publishes it to the other nodes."""

    def counts(self) -> dict:
        return {"users": len(self.users),
                "connections": sum(len(r) for r in self.users.values())}

    # --- cross-process events ----------------------------------------------------------
    def emit(self, op: str, **payload) -> None:
        """Handle an event here and in every other process."""
        event = {"op": op, **payload}
        self.handle(event)
        if self.bridge is not None:
            self.bridge.publish(event)

    def received(self, event: dict) -> None:
        """An event published by another process."""
        op = event.get("op")
        metrics.EVENTS_RECEIVED.labels(op if op in registry.EVENTS else "other").inc()
        self.handle(event)

    def handle(self, event: dict) -> None:
        for fn in registry.EVENTS.get(event.get("op"), ()):
            try:
                fn(event)
            except Exception:
                log.exception("event handler failed for %s", event.get("op"))

    def close(self) -> None:
        if self.bridge is not None:
            self.bridge.close()


def make_router(cfg, db, listen: bool, sessions: bool = False) -> Router:
    """The Redis router in cluster mode (`redis_url` set), else one node on PostgreSQL NOTIFY.

    `listen`: take other processes' events; `sessions`: this process hosts TCP sessions.
    """
    node_id = cfg.node_id or f"{socket.gethostname()}:{cfg.tcp_port}"
    if cfg.redis_url:
        from im.tcp.router.redis import RedisRouter
        return RedisRouter(node_id, cfg.redis_url, sessions=sessions)
    from im.tcp.router.pg import PgBridge
    router = Router(node_id)
    router.bridge = PgBridge(db, node_id, router.received, listen=listen)
    return router
