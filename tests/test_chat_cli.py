"""`im chat` driven through its stdin and stdout, talking to rose on a plain Client."""

import queue
import subprocess
import sys
import threading

import pytest

from im import protocol
from support import PASSWORD


class Terminal:
    """An `im chat` subprocess: type lines, expect printed lines."""

    def __init__(self, server, uid: str, res: str = "term"):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "im.cli", "chat", "--host", "127.0.0.1", "--port",
             str(server.tcp_port), "--res", res, uid],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.type(PASSWORD)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def type(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, text: str, timeout: float = 5.0) -> str:
        """The next printed line containing `text` (earlier lines are skipped)."""
        seen = []
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"{text!r} not printed; saw {seen}") from None
            if text in line:
                return line
            seen.append(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def terminal():
    started = []

    def start(server, uid: str, res: str = "term") -> Terminal:
        started.append(Terminal(server, uid, res))
        return started[-1]

    yield start
    for term in started:
        term.close()


def test_chat_befriends_talks_and_shows_presence(server, make_users, connect, terminal):
    jack, rose = make_users(2)
    term = terminal(server, jack)
    term.expect(f"connected as {jack}@term")
    rose_pc = connect(rose, res="pc")
    rose_pc.request(protocol.IM_PRESENCE, {"type": "online", "show": "chat"})

    rose_pc.request(protocol.IM_ROSTER_ADD_REQ, {"msgid": "f1", "to": jack, "msg": "hi, I'm rose"})
    term.expect(f"friend request from {rose}: hi, I'm rose")
    term.type("/accept")
    rose_pc.wait(protocol.IM_NOTIFY_ROSTER_ADD, frd=jack)
    term.expect(f"{rose} is now your friend")
    term.expect(f"{rose}@pc is chat")

    term.type(f"/to {rose}")
    term.type("hello rose")
    _, message = rose_pc.wait(protocol.IM_MESSAGE, **{"from": jack})
    assert (message["body"], message["from_res"]) == ("hello rose", "term")
    rose_pc.message(jack, "hello jack")
    term.expect(f"{rose}@pc: hello jack")

    term.type("/presence dnd")
    rose_pc.wait(protocol.IM_PRESENCE, type="state", show="dnd", **{"from": jack})
    term.type("/add nobody-at-all")
    term.expect("IM_ROSTER_ADD_REQ failed: no_such_user")

    term.type("/quit")
    assert term.proc.wait(5) == 0
    rose_pc.wait(protocol.IM_PRESENCE, type="leave", **{"from": jack})


def test_chat_reconnects_with_its_token_but_not_after_a_conflict(make_server, make_users, connect,
                                                                 terminal):
    srv = make_server(idle_timeout_s=1)
    jack, = make_users(1, srv=srv)
    term = terminal(srv, jack)
    term.expect(f"connected as {jack}@term")
    term.expect("connection lost")  # idle for a second: the server closes, the client returns
    term.expect(f"connected as {jack}@term")

    connect(jack, res="term", srv=srv)
    term.expect("disconnected by the server: conflict")
    assert term.proc.wait(5) == 0
