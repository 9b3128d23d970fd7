"""Wire format of the long connection (PROTOCOL.md §1.1–1.2).

A frame is `length (u32 BE) | msgtype (u32 BE) | body (length bytes of UTF-8 JSON object)`.
`FrameDecoder` is incremental: feed it any split of the byte stream and it yields whole
frames, or a `FrameError` carrying the contract's code for a frame it cannot accept.
"""

import struct
from dataclasses import dataclass
from collections.abc import Iterator

import orjson

IM_LOGIN = 0x10001
IM_HEARTBEAT = 0x10002
IM_LOGOUT = 0x10003
IM_MESSAGE_ACK = 0x30000
IM_MESSAGE = 0x30001
IM_PRESENCE = 0x30002
IM_ROSTER_ADD_REQ = 0x31001
IM_ROSTER_ADD_RESP = 0x31002
IM_ROSTER_DEL_REQ = 0x31003
IM_CHATROOM = 0x31004
IM_CHATROOM_INVENT = 0x31005
IM_NOTIFY_ROSTER_ADD = 0x40000
IM_NOTIFY_ROSTER_DEL = 0x40001
IM_NOTIFY_MESSAGE = 0x40002
IM_NOTIFY_GROUP_PEER_ADD = 0x40003
IM_NOTIFY_GROUP_DATA = 0x40004
IM_NOTIFY_KICK = 0x40005
IM_NOTIFY_GROUP_PEER_DEL = 0x40006

NAMES = {v: k for k, v in list(globals().items()) if k.startswith("IM_") and isinstance(v, int)}

ERROR_CODES = (
    "bad_request", "not_authenticated", "auth_failed", "unknown_type", "frame_too_large",
    "no_such_user", "no_such_group", "not_friend", "already_friends", "not_member",
    "already_member", "already_exists", "forbidden", "not_found", "already_handled",
    "body_too_long", "cannot_exit", "rate_limited", "unavailable", "internal",
)

HEADER = struct.Struct(">II")
DEFAULT_MAX_FRAME = 65536


class FrameError(Exception):
    """A frame the server rejects. `fatal` frames cannot be skipped: the stream is lost."""

    def __init__(self, code: str, text: str, msgtype: int = 0, fatal: bool = False):
        super().__init__(text)
        self.code = code
        self.text = text
        self.msgtype = msgtype
        self.fatal = fatal


@dataclass(slots=True)
class Frame:
    msgtype: int
    body: dict


def msgid_of(body: dict) -> str:
    """The frame's msgid if usable (a 1-50 char string without NUL, which PostgreSQL cannot
    store), else "" (§6.4)."""
    msgid = body.get("msgid")
    if isinstance(msgid, str) and 0 < len(msgid) <= 50 and "\x00" not in msgid:
        return msgid
    return ""


def encode(msgtype: int, body: dict | bytes) -> bytes:
    """One frame as bytes; `body` may be pre-encoded JSON (encode once, send to many)."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return HEADER.pack(len(data), msgtype) + data


def parse_body(msgtype: int, data: bytes) -> dict:
    """Decode one frame body; raise FrameError(bad_request) if it is not a JSON object."""
    if not data:
        return {}
    try:
        body = orjson.loads(data)  # checks UTF-8 itself: no decode on the hot path
    except orjson.JSONDecodeError:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("bad_request", "body is not valid UTF-8", msgtype) from None
        raise FrameError("bad_request", "body is not valid JSON", msgtype) from None
    if not isinstance(body, dict):
        raise FrameError("bad_request", "body is not a JSON object", msgtype)
    return body


class FrameDecoder:
    """Incremental decoder: `feed(bytes)` returns the frames (or FrameErrors) now complete."""

    __slots__ = ("max_frame_bytes", "_buf", "broken")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME):
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self.broken = False

    def feed(self, data: bytes) -> list["Frame | FrameError"]:
        if self.broken:
            return []
        self._buf += data
        return list(self._drain())

    def _drain(self) -> Iterator["Frame | FrameError"]:
        buf = self._buf
        pos = 0
        try:
            while len(buf) - pos >= HEADER.size:
                length, msgtype = HEADER.unpack_from(buf, pos)
                if length > self.max_frame_bytes:
                    self.broken = True
                    yield FrameError("frame_too_large",
                                     f"frame of {length} bytes exceeds {self.max_frame_bytes}",
                                     msgtype, fatal=True)
                    return
                end = pos + HEADER.size + length
                if len(buf) < end:
                    break
                data = buf[pos + HEADER.size:end]
                pos = end
                try:
                    yield Frame(msgtype, parse_body(msgtype, data))
                except FrameError as err:
                    yield err
        finally:
            del buf[:pos]
