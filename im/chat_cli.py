"""`im chat`: a small terminal client on im.client, for trying the server by hand.

One thread reads typed lines into a queue; the main thread owns the connection: it sends what
was typed, prints what arrives, keeps the session alive with heartbeats and, when the
connection drops, logs in again with the session token.
"""

import getpass
import json
import queue
import sys
import threading
import time
import uuid

from im import protocol
from im.client import Client, ConnectionClosed, RequestFailed
from im.protocol import FrameError

POLL_S = 0.1
HEARTBEAT_S = 30.0
RETRY_MAX_S = 10.0
FINAL_KICKS = {"conflict", "password_changed", "disabled"}
HELP = ("commands: /to UID, /group GID, /presence SHOW, /add UID [text], /accept [UID], /quit; "
        "other lines are sent to the current peer or group")


def _say(text: str) -> None:
    print(text, flush=True)


class Chat:
    def __init__(self, host: str, port: int, uid: str, pwd: str, res: str, tls: bool = False):
        self.addr = (host, port, tls)
        self.uid, self.pwd, self.res = uid, pwd, res
        self.token = ""
        self.client: Client | None = None
        self.peer: tuple[str, str] | None = None  # ("0", uid) or ("1", gid)
        self.show = "online"
        self.pending: list[tuple[str, str]] = []  # friend requests to us: (from, msgid)
        self.running = True
        self.last_sent = time.monotonic()

    # --- connection --------------------------------------------------------------------
    def connect(self) -> None:
        """Log in (password first, then the session token) and announce presence."""
        host, port, tls = self.addr
        client = Client(host, port, tls=tls)
        try:
            client.login(self.uid, None if self.token else self.pwd, token=self.token or None,
                         res=self.res)
        except BaseException:
            client.close()
            raise
        self.client, self.token = client, client.token
        self.send(protocol.IM_PRESENCE, {"type": "online", "show": self.show})
        _say(f"* connected as {self.uid}@{self.res}")

    def reconnect(self) -> None:
        delay = 1.0
        while self.running:
            try:
                self.connect()
                return
            except RequestFailed as err:
                _say(f"! login refused: {err.code}")
                self.running = False
            except OSError:
                _say(f"* reconnecting in {delay:.0f} s")
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def send(self, msgtype: int, body: dict) -> None:
        try:
            self.client.send(msgtype, body)
            self.last_sent = time.monotonic()
        except OSError:
            _say("! not connected, try again in a moment")

    def request(self, msgtype: int, body: dict) -> None:
        """Send with a msgid; its ACK (an error, if any) is printed when it arrives."""
        self.send(msgtype, {"msgid": uuid.uuid4().hex, **body})

    # --- main loop ---------------------------------------------------------------------
    def run(self, lines: queue.Queue) -> int:
        while self.running:
            while self.running and not lines.empty():
                line = lines.get()
                if line is None:
                    self.running = False
                else:
                    self.command(line.rstrip("\n"))
            if self.running:
                self.poll()
        if self.client is not None:
            self.client.close()
        return 0

    def poll(self) -> None:
        try:
            msgtype, body = self.client.recv(POLL_S)
        except TimeoutError:
            if time.monotonic() - self.last_sent > HEARTBEAT_S:
                self.send(protocol.IM_HEARTBEAT, {})
            return
        except (ConnectionClosed, FrameError, OSError):
            self.client.close()
            if self.running:
                _say("* connection lost")
                self.reconnect()
            return
        self.incoming(msgtype, body)

    # --- typed lines -------------------------------------------------------------------
    def command(self, line: str) -> None:
        if not line.strip():
            return
        if not line.startswith("/"):
            self.say(line)
            return
        name, _, rest = line.partition(" ")
        handler = {"/to": self.cmd_to, "/group": self.cmd_group, "/presence": self.cmd_presence,
                   "/add": self.cmd_add, "/accept": self.cmd_accept, "/quit": self.cmd_quit}.get(name)
        if handler is None:
            _say(HELP)
        else:
            handler(rest.strip())

    def say(self, text: str) -> None:
        if self.peer is None:
            _say("! choose someone first: /to UID or /group GID")
            return
        kind, to = self.peer
        self.request(protocol.IM_MESSAGE, {"to": to, "type": kind, "body": text,
                                           "time": time.strftime("%Y-%m-%d %H:%M:%S")})

    def cmd_to(self, uid: str) -> None:
        self.peer = ("0", uid) if uid else None
        _say(f"* talking to {uid}" if uid else HELP)

    def cmd_group(self, gid: str) -> None:
        self.peer = ("1", gid) if gid else None
        _say(f"* talking to group {gid}" if gid else HELP)

    def cmd_presence(self, show: str) -> None:
        self.show = show or "online"
        self.request(protocol.IM_PRESENCE, {"type": "update", "show": self.show})

    def cmd_add(self, rest: str) -> None:
        to, _, text = rest.partition(" ")
        self.request(protocol.IM_ROSTER_ADD_REQ, {"to": to, "msg": text,
                                                  "time": time.strftime("%Y-%m-%d %H:%M:%S")})

    def cmd_accept(self, uid: str) -> None:
        found = [p for p in self.pending if not uid or p[0] == uid]
        if not found:
            _say("! no pending friend request" + (f" from {uid}" if uid else ""))
            return
        self.pending.remove(found[0])
        sender, msgid = found[0]
        self.send(protocol.IM_ROSTER_ADD_RESP, {"msgid": msgid, "to": sender, "state": "1",
                                                "msg": "{}"})

    def cmd_quit(self, _: str) -> None:
        self.send(protocol.IM_LOGOUT, {"msgid": "bye"})
        self.running = False

    # --- frames from the server ----------------------------------------------------------
    def incoming(self, msgtype: int, body: dict) -> None:
        show = SHOW.get(msgtype)
        text = show(self, body) if show else f"* {protocol.NAMES.get(msgtype, msgtype)} {json.dumps(body)}"
        if text:
            _say(text)

    def on_message(self, body: dict) -> str:
        if str(body.get("type")) == "1":
            return f"[{body.get('to')}] {body.get('from')}: {body.get('body')}"
        self.send(protocol.IM_MESSAGE_ACK, {"type": protocol.IM_MESSAGE, "msgid": body.get("msgid"),
                                            "from": body.get("from")})
        return f"{body.get('from')}@{body.get('from_res')}: {body.get('body')}"

    def on_friend_request(self, body: dict) -> str:
        sender, msgid = body.get("from"), body.get("msgid")
        if (sender, msgid) not in self.pending:
            self.pending.append((sender, msgid))
        self.send(protocol.IM_MESSAGE_ACK, {"type": protocol.IM_ROSTER_ADD_REQ, "msgid": msgid,
                                            "from": sender})
        return f"* friend request from {sender}: {body.get('msg', '')} (/accept {sender})"

    def on_kick(self, body: dict) -> str:
        reason = body.get("reason", "")
        if reason in FINAL_KICKS:
            self.running = False
        return f"* disconnected by the server: {reason}"


def _ack(chat: Chat, body: dict) -> str:
    if "code" not in body:
        return ""
    name = protocol.NAMES.get(int(body.get("type") or 0), body.get("type"))
    return f"! {name} failed: {body['code']} ({body.get('err', '')})"


def _presence(chat: Chat, body: dict) -> str:
    who = f"{body.get('from')}@{body.get('from_res')}"
    return f"* {who} left" if body.get("type") == "leave" else f"* {who} is {body.get('show')}"


SHOW = {
    protocol.IM_MESSAGE_ACK: _ack,
    protocol.IM_HEARTBEAT: lambda chat, body: "",
    protocol.IM_MESSAGE: Chat.on_message,
    protocol.IM_NOTIFY_MESSAGE: lambda chat, b: f"(you@{b.get('from_res')} to {b.get('to')}): {b.get('body')}",
    protocol.IM_PRESENCE: _presence,
    protocol.IM_ROSTER_ADD_REQ: Chat.on_friend_request,
    protocol.IM_ROSTER_ADD_RESP: lambda chat, b: f"* {b.get('from')} declined your friend request",
    protocol.IM_NOTIFY_ROSTER_ADD: lambda chat, b: f"* {b.get('frd')} is now your friend",
    protocol.IM_NOTIFY_ROSTER_DEL: lambda chat, b: f"* {b.get('frd')} is no longer your friend",
    protocol.IM_NOTIFY_KICK: Chat.on_kick,
}


def _read_lines(lines: queue.Queue) -> None:
    for line in sys.stdin:
        lines.put(line)
    lines.put(None)


def run(args) -> int:
    """Entry point of `im chat` (args: host, port, uid, res, tls)."""
    pwd = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    chat = Chat(args.host, args.port, args.uid, pwd, args.res, args.tls)
    try:
        chat.connect()
    except (RequestFailed, OSError) as err:
        _say(f"! cannot log in: {getattr(err, 'code', None) or err}")
        return 1
    _say(HELP)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(lines,), daemon=True).start()
    try:
        return chat.run(lines)
    except KeyboardInterrupt:
        return 0
