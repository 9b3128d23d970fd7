"""Process life of `im serve` / `im tcp`: start the runtime and servers, wait for a signal,
drain gracefully (PROTOCOL.md §5); SIGHUP reloads what can change without a restart."""

import gc
import logging
import signal
import socket
from collections.abc import Callable

import gevent
from gevent.event import Event

from im import config, runtime, timefmt

# Keys SIGHUP applies in place (runtime.cfg is shared by every connection); max_frame_bytes
# applies to connections opened afterwards. Every other key needs a restart.
RELOADABLE = ("log_level", "log_file", "login_timeout_s", "idle_timeout_s", "max_outbox_frames",
              "max_body_chars", "max_frame_bytes", "require_friendship", "token_ttl_s", "token_cache_s",
              "login_failures_per_uid_addr", "login_failures_per_addr", "shutdown_timeout_s")

log = logging.getLogger("im.serve")


def run(cfg, with_http: bool, load_config: Callable[[], config.Config] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; `load_config` re-reads the configuration on SIGHUP."""
    runtime.start(cfg, listen=True, sessions=True)
    from im.tcp.server import TcpServer
    tcp = TcpServer(cfg, runtime.router)
    runtime.tcp_server = tcp
    tcp.start()
    http = _start_http(cfg) if with_http else None
    ops = _start_ops(cfg) if cfg.metrics_port else None
    where = f"TCP on {cfg.tcp_host}:{tcp.port}"
    if http is not None:
        where += f", HTTP on {cfg.http_host}:{http.server_port}"
    if ops is not None:
        where += f", metrics on {cfg.http_host}:{ops.server_port}"
    _tune_gc()
    print(f"im: listening: {where}; database: {runtime.database_label}", flush=True)
    log.info("serving: %s", where)

    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    if load_config is not None:
        gevent.signal_handler(signal.SIGHUP, reload, load_config)
    stop.wait()
    log.info("shutting down")
    with gevent.Timeout(cfg.shutdown_timeout_s, False):
        for server in (http, ops):
            if server is not None:
                server.close()
        tcp.shutdown(cfg.shutdown_timeout_s * 0.8)
    runtime.stop()
    log.info("stopped")
    return 0


def _tune_gc() -> None:
    """Keep start-up objects (modules, caches) out of every later collection and collect the
    young generation less often: the hot path allocates many short-lived objects, and each
    collection pauses every session."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _start_http(cfg):
    from gevent.pywsgi import WSGIServer

    from im.tcp.server import tls_context, tls_handshake
    from im.web import create_app
    from im.web.headers import FastHandler

    class HttpServer(WSGIServer):
        """pywsgi, doing the TLS handshake itself: bounded in time, a failure logged in one line."""
        tls = tls_context(cfg) if cfg.tls else None

        def handle(self, sock, address):
            # pywsgi sends the headers and the body in two writes: without this the body waits
            # for the client's delayed ACK (40 ms per response on a keep-alive connection)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = tls_handshake(self.tls, sock, address, cfg.login_timeout_s)
                if sock is None:
                    return
                sock.settimeout(None)
            super().handle(sock, address)

    server = HttpServer((cfg.http_host, cfg.http_port), create_app(cfg), log=None,
                        error_log=logging.getLogger("im.http"), handler_class=FastHandler)
    server.start()
    return server


def _start_ops(cfg):
    from gevent.pywsgi import WSGIServer

    from im.web.headers import FastHandler
    from im.web.ops import create_ops_app
    server = WSGIServer((cfg.http_host, cfg.metrics_port), create_ops_app(), log=None,
                        error_log=logging.getLogger("im.http"), handler_class=FastHandler)
    server.start()
    return server


def reload(load_config: Callable[[], config.Config]) -> None:
    """SIGHUP: re-read the configuration, apply RELOADABLE keys in place, reopen the log."""
    cfg = runtime.cfg
    try:
        fresh = load_config()
    except config.ConfigError as err:
        log.error("reload refused, configuration unchanged: %s", err)
        return
    finally:
        timefmt.set_timezone(cfg.timezone)  # load() sets it; the timezone needs a restart
    applied = []
    for key in config.KEYS:
        value = getattr(fresh, key)
        if value == getattr(cfg, key):
            continue
        if key in RELOADABLE:
            setattr(cfg, key, value)
            applied.append(key)
        else:
            log.warning("config key %s changed: needs a restart", key)
    runtime.setup_logging(cfg)
    log.info("configuration reloaded; applied: %s", ", ".join(applied) or "nothing changed")
