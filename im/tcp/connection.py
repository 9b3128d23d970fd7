"""One client connection: a reader greenlet that decodes and dispatches frames in order, and
one writer greenlet that drains a bounded outbox, coalescing queued frames into one send.
"""

import logging
import socket
import time
from collections import deque

import gevent
from gevent.event import Event

from im import protocol, registry
from im.protocol import FrameDecoder, FrameError, encode
from im.tcp.dispatch import dispatch
from im.timefmt import fmt, now

log = logging.getLogger("im.tcp")

MAX_BAD_FRAMES = 20
READ_SIZE = 65536
WRITE_BATCH = 512


class Connection:
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
        self._wake = Event()
        self._closing = False
        self._writer = None
        self.close_reason = ""

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
        """Queue an encoded frame; a full outbox disconnects the slow client."""
        if self._closing:
            return False
        if len(self._out) >= self.cfg.max_outbox_frames:
            log.warning("outbox full, disconnecting %s", self)
            self.server.stats["outbox_drops"] += 1
            self.abort("outbox_full")
            return False
        self._out.append(data)
        self.server.stats["out", data[4:8]] += 1  # frames by type, for im/metrics.py
        self._wake.set()
        return True

    def ack(self, msgtype: int, msgid: str, **fields) -> None:
        body = {"type": str(msgtype), "msgid": msgid, "time": fmt(now())}
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
            self._wake.set()

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
        out, sock = self._out, self.sock
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                while out:
                    n = min(len(out), WRITE_BATCH)
                    data = out.popleft() if n == 1 else b"".join([out.popleft() for _ in range(n)])
                    sock.sendall(data)
                    self.server.stats["frames_out"] += n
                if self._closing:
                    break
        except OSError:
            pass
        finally:
            self._closing = True
            self._shutdown()

    # --- reading (this connection's greenlet) ------------------------------------------
    def run(self) -> None:
        self._writer = gevent.spawn(self._write_loop)
        decoder = FrameDecoder(self.cfg.max_frame_bytes)
        login_deadline = time.monotonic() + self.cfg.login_timeout_s
        try:
            while not self._closing:
                timeout = self.cfg.idle_timeout_s
                if self.uid is None:
                    timeout = min(timeout, login_deadline - time.monotonic())
                    if timeout <= 0:
                        raise TimeoutError()
                self.sock.settimeout(timeout)
                data = self.sock.recv(READ_SIZE)
                if not data:
                    self.close_reason = self.close_reason or "closed"
                    break
                for item in decoder.feed(data):
                    if self._closing:
                        break
                    if isinstance(item, FrameError):
                        self._bad_frame(item)
                    else:
                        self.server.stats["frames_in"] += 1
                        self.server.stats["in", item.msgtype] += 1
                        dispatch(self, item)
        except TimeoutError:
            self.close_reason = "login_timeout" if self.uid is None else "idle_timeout"
        except OSError:
            self.close_reason = self.close_reason or "reset"
        finally:
            self._finish()

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
        if self.uid is not None:
            self.server.router.detach(self)
            for hook in registry.DISCONNECT_HOOKS:
                try:
                    hook(self)
                except Exception:
                    log.exception("disconnect hook failed for %s", self)
            log.info("connection closed uid=%s res=%s addr=%s reason=%s",
                     self.uid, self.res, self.addr, self.close_reason)
        if self._writer is not None:
            self._writer.join(timeout=self.cfg.shutdown_timeout_s)
            self._writer.kill(block=False)
        try:
            self.sock.close()
        except OSError:
            pass
