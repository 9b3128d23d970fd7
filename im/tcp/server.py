"""The TCP server: a gevent StreamServer spawning one Connection per client, bounded by
`max_connections`, with TCP_NODELAY, optional TLS and a graceful shutdown.
"""

import logging
import socket
from collections import Counter

import gevent
from gevent import ssl
from gevent.pool import Pool
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


class TcpServer:
    def __init__(self, cfg, router):
        self.cfg = cfg
        self.router = router
        self.stats: Counter = Counter()
        self.connections: set[Connection] = set()
        self.pool = Pool(cfg.max_connections)
        self.tls = tls_context(cfg) if cfg.tls else None
        self.server = StreamServer((cfg.tcp_host, cfg.tcp_port), self._handle, spawn=self.pool,
                                   backlog=4096)

    @property
    def port(self) -> int:
        return self.server.server_port

    def start(self) -> None:
        self.server.start()
        log.info("TCP listening on %s:%d%s", self.cfg.tcp_host, self.port,
                 " (TLS)" if self.cfg.tls else "")

    def _handle(self, sock, addr) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self.tls is not None:
            sock = tls_handshake(self.tls, sock, addr, self.cfg.login_timeout_s)
            if sock is None:
                return
        conn = Connection(sock, addr, self)
        self.connections.add(conn)
        self.stats["connections_opened"] += 1
        try:
            conn.run()
        finally:
            self.connections.discard(conn)

    def shutdown(self, timeout: float) -> None:
        """Stop accepting, kick every connection with `shutdown`, wait for them to drain."""
        self.server.close()
        for conn in list(self.connections):
            conn.kick("shutdown")
        if not self.pool.join(timeout=timeout):
            log.warning("connections still open after %.1fs, killing them", timeout)
            self.pool.kill(timeout=1)
        gevent.sleep(0)
