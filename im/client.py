"""A client library for the TCP protocol and the HTTP API.

Synchronous and thread-free: a `Client` reads its socket only when asked (`recv`, `wait`), so it
works from plain threads and, with gevent's monkey patching, from greenlets. Frames that arrive
while waiting for something else are kept in a backlog for later `wait` calls.
"""

import json
import socket
import ssl as ssl_mod
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable

from im import protocol
from im.protocol import FrameDecoder, FrameError, encode

Frame = tuple[int, dict]


class ConnectionClosed(ConnectionError):
    pass


class RequestFailed(Exception):
    """An error ACK: `.code` is the contract's error code."""

    def __init__(self, ack: dict):
        super().__init__(f"{ack.get('code')}: {ack.get('err')}")
        self.ack = ack
        self.code = ack.get("code")


class Client:
    def __init__(self, host: str = "127.0.0.1", port: int = 7070, timeout: float = 5.0,
                 tls: bool = False, max_frame_bytes: int = 16 * 1024 * 1024,
                 source_address: tuple[str, int] | None = None):
        sock = socket.create_connection((host, port), timeout=timeout, source_address=source_address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx = ssl_mod.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl_mod.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.timeout = timeout
        self.decoder = FrameDecoder(max_frame_bytes)
        self.backlog: deque[Frame] = deque()
        self.uid = ""
        self.res = ""
        self.token = ""
        self.eof = False

    # --- raw frames --------------------------------------------------------------------
    def send(self, msgtype: int, body: dict | bytes = b"") -> None:
        self.sock.sendall(encode(msgtype, body if body != b"" else {}))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no frame in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError("no frame in time") from None
        except OSError as err:
            self.eof = True
            raise ConnectionClosed(str(err)) from None
        if not data:
            self.eof = True
            raise ConnectionClosed("server closed the connection")
        for item in self.decoder.feed(data):
            if isinstance(item, FrameError):
                raise item
            self.backlog.append((item.msgtype, item.body))

    def recv(self, timeout: float | None = None) -> Frame:
        """The next frame, in arrival order."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.backlog:
            self._read(deadline)
        return self.backlog.popleft()

    def wait(self, match: Callable[[int, dict], bool] | int | None = None,
             timeout: float | None = None, **fields) -> Frame:
        """The first frame (from the backlog, then the socket) matching `match` (a msgtype or a
        predicate) and having every `fields` value; others stay in the backlog."""
        def ok(mt: int, body: dict) -> bool:
            if isinstance(match, int) and mt != match:
                return False
            if callable(match) and not match(mt, body):
                return False
            return all(body.get(k) == v for k, v in fields.items())

        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        checked = 0
        while True:
            for i in range(checked, len(self.backlog)):
                mt, body = self.backlog[i]
                if ok(mt, body):
                    del self.backlog[i]
                    return mt, body
            checked = len(self.backlog)
            self._read(deadline)

    def drain(self, quiet: float = 0.2) -> list[Frame]:
        """Every frame that arrives until the connection is quiet for `quiet` seconds."""
        frames = list(self.backlog)
        self.backlog.clear()
        while True:
            try:
                frames.append(self.recv(quiet))
            except TimeoutError:
                return frames

    def assert_silent(self, quiet: float = 0.3, match: int | None = None) -> None:
        """Raise if a frame (of msgtype `match`, if given) arrives within `quiet` seconds."""
        frames = [f for f in self.drain(quiet) if match is None or f[0] == match]
        if frames:
            raise AssertionError(f"unexpected frames: {frames}")

    def wait_closed(self, timeout: float | None = None) -> list[Frame]:
        """Read until the server closes; returns the frames received on the way."""
        frames = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while True:
                while self.backlog:
                    frames.append(self.backlog.popleft())
                self._read(deadline)
        except ConnectionClosed:
            frames.extend(self.backlog)
            self.backlog.clear()
            return frames

    # --- requests ----------------------------------------------------------------------
    def request(self, msgtype: int, body: dict, timeout: float | None = None) -> dict:
        """Send a frame with a msgid (one is made if absent) and return its success ACK;
        raise RequestFailed on an error ACK."""
        body = dict(body)
        body.setdefault("msgid", uuid.uuid4().hex)
        self.send(msgtype, body)
        return self.ack_for(msgtype, body["msgid"], timeout)

    def ack_for(self, msgtype: int, msgid: str, timeout: float | None = None) -> dict:
        _, ack = self.wait(protocol.IM_MESSAGE_ACK, timeout, type=str(msgtype), msgid=msgid)
        if "code" in ack:
            raise RequestFailed(ack)
        return ack

    def login(self, uid: str, pwd: str | None = None, token: str | None = None,
              res: str = "test", timeout: float | None = None) -> dict:
        body = {"uid": uid, "res": res}
        body.update({"token": token} if token else {"pwd": pwd})
        ack = self.request(protocol.IM_LOGIN, body, timeout)
        self.uid, self.res, self.token = uid, res, ack["token"]
        return ack

    def heartbeat(self, timeout: float | None = None) -> dict:
        self.send(protocol.IM_HEARTBEAT, {})
        return self.wait(protocol.IM_HEARTBEAT, timeout)[1]

    def message(self, to: str, body: str, group: bool = False, **extra) -> dict:
        """Send IM_MESSAGE and return its ACK (with `seq` and `time`)."""
        frame = {"to": to, "body": body, "type": "1" if group else "0",
                 "time": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}
        return self.request(protocol.IM_MESSAGE, frame)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HttpError(Exception):
    def __init__(self, status: int, body: dict | str, headers=None):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.code = body.get("code") if isinstance(body, dict) else None


class Http:
    """The HTTP API: `login`, `qid(name, **params)`, `admin(method, path, body)`."""

    def __init__(self, base_url: str, token: str = "", timeout: float = 10.0):
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body=None, token: str | None = None,
             headers: dict | None = None, raw: bytes | None = None) -> tuple[int, dict | bytes, dict]:
        """One request; returns (status, decoded JSON or bytes, headers) without raising."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if body is not None and raw is None:
            req.add_header("Content-Type", "application/json")
        auth = self.token if token is None else token
        if auth:
            req.add_header("Authorization", f"Bearer {auth}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, payload, hdrs = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            status, payload, hdrs = err.code, err.read(), dict(err.headers)
        if hdrs.get("Content-Type", "").startswith("application/json"):
            payload = json.loads(payload)
        return status, payload, hdrs

    def _ok(self, method: str, path: str, body=None, token: str | None = None) -> dict:
        status, payload, hdrs = self.call(method, path, body, token)
        if status >= 300:
            raise HttpError(status, payload, hdrs)
        return payload

    def login(self, uid: str, pwd: str) -> str:
        self.token = self._ok("POST", "/api/login", {"uid": uid, "pwd": pwd}, token="")["result"]
        return self.token

    def qid(self, name: str, **params) -> dict:
        return self._ok("POST", f"/api/{name}", params)

    def admin(self, method: str, path: str, body=None) -> dict:
        return self._ok(method, f"/admin{path}", body)


def rows(result: dict) -> list[dict]:
    """A `table` result as a list of plain dicts."""
    return [{c["n"]: c["v"] for c in r} for r in result["result"]]
