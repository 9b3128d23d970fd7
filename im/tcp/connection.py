"""One client connection: a reader greenlet that decodes and dispatches frames in order.

Frames are written straight from the sending greenlet with a non-blocking send while nothing is
queued; only when the socket would block (or under TLS) do they go to a bounded outbox, drained
by a writer greenlet spawned for the occasion (one at a time) that coalesces queued frames into
one send and exits once the outbox is empty. An idle connection thus holds one greenlet, and its
idle/login deadline is one lazy timer re-armed only when it fires, not a timer per recv.
"""

import logging
import socket
import time
from collections import deque

import gevent

from im import protocol, registry
from im.protocol import FrameDecoder, FrameError, encode
from im.tcp.dispatch import dispatch
from im.timefmt import now_text

log = logging.getLogger("im.tcp")

MAX_BAD_FRAMES = 20
READ_SIZE = 65536
WRITE_BATCH = 512
FOREVER = float("inf")
# One receive buffer for all connections: each read is copied into its decoder before the reader
# can yield, and a fresh 64 KiB bytes per recv would cost an mmap/munmap pair each time.
_READ_VIEW = memoryview(bytearray(READ_SIZE))


class Connection:
    __slots__ = ("sock", "addr", "server", "cfg", "uid", "res", "token_hash", "_presence",
                 "login_failures", "bad_frames", "state", "_out", "_closing", "_writer",
                 "close_reason", "_send_now", "_deadline", "_timer", "__weakref__")

    def __init__(self, sock, addr, server):
        self.sock = sock
        self.addr = addr[0] if isinstance(addr, tuple) else str(addr)
        self.server = server
        self.cfg = server.cfg
        self.uid: str | None = None
        self.res: str = ""
        self.token_hash: bytes | None = None
        self._presence: str | None = None
        self.login_failures = 0
        self.bad_frames = 0
        self.state: dict = {}  # per-feature state of this session
        self._out: deque = deque()
        self._closing = False
        self._writer = None
        self.close_reason = ""
        # the underlying non-blocking socket's send; None under TLS (the writer does it all)
        self._send_now = sock._sock.send if server.tls is None else None
        self._deadline = 0.0
        self._timer = None

    def __repr__(self) -> str:
        return f"<Connection {self.uid or '-'}/{self.res or '-'} {self.addr}>"

    @property
    def presence(self) -> str | None:
        """`show` once the connection announced presence; the router hears of every change."""
        return self._presence

    @presence.setter
    def presence(self, show: str | None) -> None:
        self._presence = show
        if self.uid is not None:
            self.server.router.presence_changed(self)

    # --- sending (any greenlet) ---------------------------------------------------------
    def send(self, msgtype: int, body: dict) -> bool:
        return self.send_raw(encode(msgtype, body))

    def send_raw(self, data: bytes) -> bool:
        """Send an encoded frame, or queue it behind those queued; a full outbox disconnects
        the slow client."""
        if self._closing:
            return False
        if len(self._out) >= self.cfg.max_outbox_frames:
            log.warning("outbox full, disconnecting %s", self)
            self.server.stats["outbox_drops"] += 1
            self.abort("outbox_full")
            return False
        self.server.stats["out", data[4:8]] += 1  # frames by type, for im/metrics.py
        if self._writer is None and self._send_now is not None:
            data = self._try_send(data)
            if not data:
                return not self._closing
        self._out.append(data)
        if self._writer is None:
            self._writer = gevent.spawn(self._write_loop)
        return True

    def _try_send(self, data: bytes) -> bytes:
        """Send what the socket takes without blocking; the rest, for the writer."""
        try:
            sent = self._send_now(data)
        except BlockingIOError:
            return data
        except OSError:
            self.abort("reset")
            return b""
        if sent == len(data):
            self.server.stats["frames_out"] += 1
            return b""
        return data[sent:]

    def ack(self, msgtype: int, msgid: str, **fields) -> None:
        body = {"type": str(msgtype), "msgid": msgid, "time": now_text()}
        body.update(fields)
        self.send(protocol.IM_MESSAGE_ACK, body)

    def error(self, msgtype: int, msgid: str, code: str, text: str) -> None:
        self.send(protocol.IM_MESSAGE_ACK,
                  {"type": str(msgtype), "msgid": msgid, "err": text, "code": code})

    def kick(self, reason: str) -> None:
        """IM_NOTIFY_KICK, flush, close."""
        if self._closing:
            return
        self.send(protocol.IM_NOTIFY_KICK, {"reason": reason})
        self.close(reason)

    def close(self, reason: str) -> None:
        """Close after the queued frames are written."""
        if not self._closing:
            self.close_reason = reason
            self._closing = True
            if self._writer is None:  # else the writer shuts down once it has flushed
                self._shutdown()

    def abort(self, reason: str) -> None:
        """Close now, dropping what is queued."""
        self.close_reason = self.close_reason or reason
        self._closing = True
        self._out.clear()
        self._shutdown()
        if self._writer is not None and self._writer is not gevent.getcurrent():
            self._writer.kill(block=False)

    @property
    def closing(self) -> bool:
        return self._closing

    def _shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _write_loop(self) -> None:
        """Drain the outbox, then exit (shutting the socket down if the connection closes)."""
        out, sock = self._out, self.sock
        try:
            while out:
                n = min(len(out), WRITE_BATCH)
                data = out.popleft() if n == 1 else b"".join([out.popleft() for _ in range(n)])
                sock.sendall(data)
                self.server.stats["frames_out"] += n
        except OSError:
            self._closing = True
        finally:
            self._writer = None
            if self._closing:
                self._shutdown()

    # --- reading (this connection's greenlet) ------------------------------------------
    def run(self) -> None:
        decoder = FrameDecoder(self.cfg.max_frame_bytes)
        idle = self.cfg.idle_timeout_s
        login_deadline = time.monotonic() + self.cfg.login_timeout_s
        self._deadline = min(login_deadline, time.monotonic() + idle)
        self.sock.settimeout(None)  # the deadline timer below bounds the waits
        self._arm(self._deadline - time.monotonic())
        try:
            while not self._closing:
                size = self.sock.recv_into(_READ_VIEW)
                self._deadline = FOREVER  # a slow handler is not silence
                if not size:
                    self.close_reason = self.close_reason or "closed"
                    break
                for item in decoder.feed(_READ_VIEW[:size]):
                    if self._closing:
                        break
                    if isinstance(item, FrameError):
                        self._bad_frame(item)
                    else:
                        self.server.stats["frames_in"] += 1
                        self.server.stats["in", item.msgtype] += 1
                        dispatch(self, item)
                self._deadline = time.monotonic() + idle
                if self.uid is None:
                    self._deadline = min(self._deadline, login_deadline)
        except OSError:
            self.close_reason = self.close_reason or "reset"
        finally:
            self._finish()

    def _arm(self, seconds: float) -> None:
        self._timer = gevent.get_hub().loop.timer(max(0.0, seconds))
        self._timer.start(self._on_timer)

    def _on_timer(self) -> None:
        """At the deadline (in the hub): re-arm if there was activity since, else close; a
        connection still not closed `shutdown_timeout_s` later (a stuck writer) is aborted."""
        if self._closing:
            self.abort(self.close_reason)
            return
        remaining = self._deadline - time.monotonic()
        if remaining > 0:  # FOREVER while a handler runs: look again an idle period later
            self._arm(min(remaining, self.cfg.idle_timeout_s))
            return
        self.close("login_timeout" if self.uid is None else "idle_timeout")
        self._arm(self.cfg.shutdown_timeout_s)

    def _bad_frame(self, err: FrameError) -> None:
        self.error(err.msgtype, "", err.code, err.text)
        if err.fatal:
            self.close(err.code)
        else:
            self.count_bad_frame()

    def count_bad_frame(self) -> None:
        self.bad_frames += 1
        if self.bad_frames >= MAX_BAD_FRAMES:
            log.info("too many bad frames, closing %s", self)
            self.close("bad_frames")

    def _finish(self) -> None:
        self.close(self.close_reason or "closed")
        if self._timer is not None:
            self._timer.close()
        if self.uid is not None:
            self.server.router.detach(self)
            for hook in registry.DISCONNECT_HOOKS:
                try:
                    hook(self)
                except Exception:
                    log.exception("disconnect hook failed for %s", self)
            log.info("connection closed uid=%s res=%s addr=%s reason=%s",
                     self.uid, self.res, self.addr, self.close_reason)
        writer = self._writer
        if writer is not None:
            writer.join(timeout=self.cfg.shutdown_timeout_s)
            writer.kill(block=False)
        try:
            self.sock.close()
        except OSError:
            pass
