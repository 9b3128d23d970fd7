"""One client connection, served from the hub until a frame needs a handler.

An idle connection holds no greenlet: a read watcher calls `_on_readable` in the hub, which
reads once without blocking and answers there what cannot block (frame errors, and the
frames whose handlers registered an `inline` predicate that holds: heartbeats, receipts, a
chat message whose checks hit the caches) when nothing is queued before it. Any other frame
goes, in order, to a reader greenlet (a parked one, else a new one), which dispatches the
queued frames, then hands the socket back to the watcher and parks (the socket is not read
while it runs: a flooding client is held back by TCP). Under TLS the reader greenlet does the
reading too (the SSL layer may wait for the rest of a record).

Frames are written straight from the sending greenlet with a non-blocking send while nothing is
queued; only when the socket would block (or under TLS) do they go to a bounded outbox, drained
by a writer greenlet spawned for the occasion (one at a time) that coalesces queued frames into
one send and exits once the outbox is empty. The idle/login deadline is one lazy timer re-armed
only when it fires, not a timer per read.
"""

import logging
import socket
import time
from collections import deque

import gevent
import greenlet

from im import protocol, registry
from im.protocol import Frame, FrameDecoder, FrameError, encode
from im.tcp.dispatch import dispatch, dispatch_inline
from im.timefmt import now_text

log = logging.getLogger("im.tcp")

MAX_BAD_FRAMES = 20
READ_SIZE = 65536
WRITE_BATCH = 512
FOREVER = float("inf")
# One receive buffer for all connections: each read is copied into its decoder before the reader
# can yield, and a fresh 64 KiB bytes per recv would cost an mmap/munmap pair each time.
_READ_VIEW = memoryview(bytearray(READ_SIZE))


# Reader greenlets parked between uses: a new greenlet per busy moment of a connection costs
# ~40 us more than a switch (its C stack and its 16 KiB interpreter frame chunk, an mmap/munmap).
_parked: list = []
MAX_PARKED = 64


def _reader(conn: "Connection") -> None:
    """A reader greenlet: handle one connection's queued frames, then park until the hub
    hands it the next connection (or exit when enough are parked)."""
    hub = gevent.get_hub()
    while True:
        try:
            conn._read_loop()
        except Exception:
            log.exception("reader failed for %s", conn)
        if len(_parked) >= MAX_PARKED:
            return
        _parked.append(greenlet.getcurrent())
        conn = hub.switch()


class Connection:
    __slots__ = ("sock", "addr", "server", "cfg", "uid", "res", "token_hash", "_presence",
                 "login_failures", "bad_frames", "_state", "_out", "_closing", "_writer",
                 "close_reason", "_raw", "_deadline", "_login_by", "_timer", "_watcher",
                 "_decoder", "_pending", "_corked", "__weakref__")

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
        self._state: dict | None = None
        self._out: deque | None = None  # frames waiting for the writer, created on demand
        self._closing = False
        self._writer = None
        self.close_reason = ""
        # the underlying non-blocking socket; None under TLS (greenlets do all the I/O)
        self._raw = sock._sock if server.tls is None else None
        self._deadline = 0.0
        self._login_by = 0.0
        self._timer = None
        self._watcher = None
        self._decoder = FrameDecoder(self.cfg.max_frame_bytes)
        self._pending: deque | None = None  # frames waiting for the reader greenlet
        self._corked: list | None = None  # frames sent during this turn of the loop

    def __repr__(self) -> str:
        return f"<Connection {self.uid or '-'}/{self.res or '-'} {self.addr}>"

    @property
    def state(self) -> dict:
        """Per-feature state of this session, created on first use."""
        if self._state is None:
            self._state = {}
        return self._state

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
        out = self._out
        corked = self._corked
        if out is not None and len(out) >= self.cfg.max_outbox_frames \
                or corked is not None and len(corked) >= self.cfg.max_outbox_frames:
            log.warning("outbox full, disconnecting %s", self)
            self.server.stats["outbox_drops"] += 1
            self.abort("outbox_full")
            return False
        self.server.stats["out", data[4:8]] += 1  # frames by type, for im/metrics.py
        if self._writer is None and self._raw is not None:
            if corked is None:
                self._corked = [data]
                gevent.get_hub().loop.run_callback(self._uncork)
            else:
                corked.append(data)
            return True
        self._queue(data)
        return True

    def _uncork(self) -> None:
        """Send the frames of one turn of the loop in one call (the chat writer's ACKs and
        deliveries of a batch: one send per connection instead of one per frame)."""
        corked, self._corked = self._corked, None
        if not corked:
            return
        rest = self._try_send(corked[0] if len(corked) == 1 else b"".join(corked), len(corked))
        if rest:
            self._queue(rest)

    def _queue(self, data: bytes) -> None:
        out = self._out
        if out is None:
            out = self._out = deque()
        out.append(data)
        if self._writer is None:
            self._writer = gevent.spawn(self._write_loop)

    def _try_send(self, data: bytes, frames: int) -> bytes:
        """Send what the socket takes without blocking; the rest, for the writer."""
        try:
            sent = self._raw.send(data)
        except BlockingIOError:
            return data
        except OSError:
            self.abort("reset")
            return b""
        if sent == len(data):
            self.server.stats["frames_out"] += frames
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
            self._uncork()  # what was sent before the close goes out first
            self.close_reason = reason
            self._closing = True
            if self._writer is None:  # else the writer shuts down once it has flushed
                self._shutdown()

    def abort(self, reason: str) -> None:
        """Close now, dropping what is queued."""
        self.close_reason = self.close_reason or reason
        self._closing = True
        self._corked = None
        out, self._out = self._out, None
        if out:
            out.clear()  # the writer stops at once
        self._shutdown()
        if self._writer is not None and self._writer is not gevent.getcurrent():
            self._writer.kill(block=False)

    @property
    def closing(self) -> bool:
        return self._closing

    def _shutdown(self) -> None:
        """Shut the socket down: the read watcher then sees the end of the stream."""
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
            if self._out is out and not out:
                self._out = None
            if self._closing:
                self._shutdown()

    # --- reading -----------------------------------------------------------------------
    def start(self) -> None:
        """Watch the socket (called once the connection is accepted, in any greenlet)."""
        started = time.monotonic()
        self._login_by = started + self.cfg.login_timeout_s
        self._deadline = min(self._login_by, started + self.cfg.idle_timeout_s)
        self.sock.settimeout(None)  # the deadline timer bounds the waits
        self._arm(self._deadline - started)
        self._watcher = gevent.get_hub().loop.io(self.sock.fileno(), 1)
        self._watcher.start(self._on_readable)

    def _on_readable(self) -> None:
        """The socket is readable (in the hub): read once, without blocking."""
        if self._raw is None:
            self._start_reader()
            return
        try:
            size = self._raw.recv_into(_READ_VIEW)
        except BlockingIOError:
            return
        except OSError:
            self.close_reason = self.close_reason or "reset"
            size = 0
        if not size:
            self.close_reason = self.close_reason or "closed"
            self._end()
            return
        self._feed(_READ_VIEW[:size])
        if self._closing:
            self._end()
        elif self._pending:
            self._start_reader()

    def _feed(self, data: memoryview) -> None:
        """Decode what was read; answer what cannot block unless frames wait before it."""
        stats = self.server.stats
        for item in self._decoder.feed(data):
            if self._closing:
                break
            if isinstance(item, Frame):
                stats["frames_in"] += 1
                stats["in", item.msgtype] += 1
                if not self._pending and dispatch_inline(self, item):
                    continue
            elif not self._pending:
                self._bad_frame(item)
                continue
            if self._pending is None:
                self._pending = deque()
            self._pending.append(item)
        if self._pending:
            self._deadline = FOREVER  # a slow handler is not silence
        else:
            self._touch()

    def _touch(self) -> None:
        """Activity: the idle (or, before login, the login) deadline starts again."""
        deadline = time.monotonic() + self.cfg.idle_timeout_s
        self._deadline = deadline if self.uid is not None else min(deadline, self._login_by)

    def _start_reader(self) -> None:
        """(In the hub.) Hand the connection to a parked reader greenlet, or a new one."""
        self._watcher.stop()
        if _parked:
            _parked.pop().switch(self)
        else:
            gevent.spawn_raw(_reader, self)

    def _end(self) -> None:
        """No more reading: finish in a greenlet (the disconnect hooks may block)."""
        self._watcher.stop()
        gevent.spawn(self._finish)

    def _read_loop(self) -> None:
        """The reader greenlet: give the socket back to the watcher once the queued frames
        are handled, or finish the connection."""
        handed_back = False
        try:
            handed_back = self._handle_queued()
        except OSError:
            self.close_reason = self.close_reason or "reset"
        finally:
            if handed_back:
                self._watcher.start(self._on_readable)
            else:
                self._finish()

    def _handle_queued(self) -> bool:
        """Handle the queued frames in order (under TLS, read them first, and on while the
        SSL layer holds more); False once the connection ends."""
        while not self._closing:
            if self._raw is None and not self._read_tls():
                return False
            pending = self._pending
            while pending and not self._closing:
                item = pending.popleft()
                if isinstance(item, FrameError):
                    self._bad_frame(item)
                else:
                    dispatch(self, item)
            if not pending:
                self._pending = None
            self._touch()
            if self._raw is not None or not self.sock.pending():
                return not self._closing
        return False

    def _read_tls(self) -> bool:
        """One read under TLS (may wait for the rest of a record); False at the end."""
        size = self.sock.recv_into(_READ_VIEW)
        if not size:
            self.close_reason = self.close_reason or "closed"
            return False
        self._feed(_READ_VIEW[:size])
        return True

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
        self._watcher.close()
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
        self.server.closed(self)
