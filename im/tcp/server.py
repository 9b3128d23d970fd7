"""The TCP server: a gevent StreamServer accepting in the hub, one Connection per client
(no greenlet of its own), bounded by `max_connections`, with TCP_NODELAY, optional TLS and a
graceful shutdown.
"""

import logging
import socket
from collections import Counter

import gevent
from gevent import ssl
from gevent.event import Event
from gevent.server import StreamServer

from im.tcp.connection import Connection

log = logging.getLogger("im.tcp")


def tls_context(cfg) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    return context


def tls_handshake(context: ssl.SSLContext, sock, addr, timeout: float):
    """The server side of a TLS handshake, within `timeout` (a silent client must not hold a
    slot forever); None, with the socket closed, if it fails. The socket keeps the timeout."""
    sock.settimeout(timeout)
    try:
        return context.wrap_socket(sock, server_side=True)
    except OSError as err:  # ssl.SSLError and timeouts are OSErrors
        log.info("TLS handshake failed addr=%s: %s", addr[0] if isinstance(addr, tuple) else addr,
                 getattr(err, "reason", None) or type(err).__name__)
        sock.close()
        return None


class _Acceptor(StreamServer):
    """Accepts in the hub and hands each socket to `tcp.accept` for good (its connection
    closes it); stops accepting while `max_connections` are open or in their TLS handshake."""

    def __init__(self, tcp: "TcpServer"):
        super().__init__((tcp.cfg.tcp_host, tcp.cfg.tcp_port), tcp.accept, spawn=None,
                         backlog=4096)
        self.tcp = tcp

    def full(self) -> bool:
        return len(self.tcp.connections) + self.tcp.handshakes >= self.tcp.cfg.max_connections

    def do_close(self, *args) -> None:
        """Not here: the socket belongs to its connection."""


class TcpServer:
    def __init__(self, cfg, router):
        self.cfg = cfg
        self.router = router
        self.stats: Counter = Counter()
        self.connections: set[Connection] = set()
        self.handshakes = 0
        self.tls = tls_context(cfg) if cfg.tls else None
        self.server = _Acceptor(self)
        self._drained = Event()

    @property
    def port(self) -> int:
        return self.server.server_port

    def start(self) -> None:
        self.server.start()
        log.info("TCP listening on %s:%d%s", self.cfg.tcp_host, self.port,
                 " (TLS)" if self.cfg.tls else "")

    def accept(self, sock, addr) -> None:
        """A new client (in the hub): served at once, or after a TLS handshake in a greenlet."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self.tls is None:
            self._serve(sock, addr)
            return
        self.handshakes += 1
        gevent.spawn(self._handshake, sock, addr)

    def _handshake(self, sock, addr) -> None:
        try:
            sock = tls_handshake(self.tls, sock, addr, self.cfg.login_timeout_s)
        finally:
            self.handshakes -= 1
        if sock is None:
            self._slot_freed()
        else:
            self._serve(sock, addr)

    def _serve(self, sock, addr) -> None:
        conn = Connection(sock, addr, self)
        self.connections.add(conn)
        self.stats["connections_opened"] += 1
        try:
            conn.start()
        except OSError:
            self.connections.discard(conn)
            sock.close()

    def closed(self, conn: Connection) -> None:
        """`conn` is closed: its slot is free."""
        self.connections.discard(conn)
        if not self.connections:
            self._drained.set()
        self._slot_freed()

    def _slot_freed(self) -> None:
        if self.server.started:
            self.server.start_accepting()  # no-op unless stopped while full

    def shutdown(self, timeout: float) -> None:
        """Stop accepting, kick every connection with `shutdown`, wait for them to drain."""
        self.server.close()
        self._drained.clear()
        for conn in list(self.connections):
            conn.kick("shutdown")
        if self.connections and not self._drained.wait(timeout):
            log.warning("connections still open after %.1fs, aborting them", timeout)
            for conn in list(self.connections):
                conn.abort("shutdown")
            self._drained.wait(1)
        gevent.sleep(0)
