"""Process life of `im serve` / `im tcp`: start the runtime and servers, wait for a signal,
drain gracefully (PROTOCOL.md §5)."""

import logging
import signal

import gevent
from gevent.event import Event

from im import runtime

log = logging.getLogger("im.serve")


def run(cfg, with_http: bool) -> int:
    runtime.start(cfg, listen=True)
    from im.tcp.server import TcpServer
    tcp = TcpServer(cfg, runtime.router)
    runtime.tcp_server = tcp
    tcp.start()
    http = _start_http(cfg) if with_http else None
    where = f"TCP on {cfg.tcp_host}:{tcp.port}"
    if http is not None:
        where += f", HTTP on {cfg.http_host}:{http.server_port}"
    print(f"im: listening: {where}; database: {runtime.database_label}", flush=True)
    log.info("serving: %s", where)

    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    stop.wait()
    log.info("shutting down")
    with gevent.Timeout(cfg.shutdown_timeout_s, False):
        if http is not None:
            http.close()
        tcp.shutdown(cfg.shutdown_timeout_s * 0.8)
    runtime.stop()
    log.info("stopped")
    return 0


def _start_http(cfg):
    from gevent.pywsgi import WSGIServer

    from im.web import create_app
    ssl = {"certfile": cfg.tls_cert, "keyfile": cfg.tls_key} if cfg.tls else {}
    server = WSGIServer((cfg.http_host, cfg.http_port), create_app(cfg), log=None,
                        error_log=logging.getLogger("im.http"), **ssl)
    server.start()
    return server
