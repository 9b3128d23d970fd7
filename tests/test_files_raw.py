"""The file server's raw-body upload *(ext)*: a chunk as an `application/octet-stream` body with
the parameters in the query string, under the same rules and answers as the base64 `bin` form
(PROTOCOL.md §3; docs/files.md)."""

import base64
import hashlib
import os
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from im.client import Http
from test_files import Files, new_name, signature
from test_gunicorn import start_gunicorn

RAW = {"Content-Type": "application/octet-stream"}


class RawFiles(Files):
    """A file-server client sending chunks as raw bodies."""

    def __init__(self, server, uid: str, http: Http | None = None):
        if http is None:
            super().__init__(server, uid)
        else:
            self.http, self.token = http, http.login(uid, "pw")

    def raw(self, name: str, data: bytes, offset: int, filesize: int, sign: bool = True,
            bearer: str | None = None, **params):
        query = {"filename": name, "filesize": filesize, "offset": offset, **params}
        if sign:
            query["signature"] = signature(self.token, name, str(offset))
        return self.http.call("POST", f"/file/upload?{urllib.parse.urlencode(query)}", raw=data,
                              token=bearer, headers=RAW)

    def raw_all(self, name: str, data: bytes, chunk: int) -> None:
        self.raw_all_from(name, data, 0, chunk)

    def raw_all_from(self, name: str, data: bytes, start: int, chunk: int) -> None:
        for at in range(start, len(data), chunk):
            status, body, headers = self.raw(name, data[at:at + chunk], at, len(data))
            assert (status, headers["FI"]) == (200, str(min(at + chunk, len(data)))), body

    def head_only(self, srv, name: str, filesize: int, offset: int, headers: str,
                  body: bytes = b"") -> bytes:
        """A hand-written request (headers, then `body`, then end of sending); the status line."""
        with self.begin(srv, name, filesize, offset, headers, body) as sock:
            return status_line(sock)

    def begin(self, srv, name: str, filesize: int, offset: int, headers: str, body: bytes = b"") -> socket.socket:
        """A connection that has sent a request's headers and the start of its body."""
        query = urllib.parse.urlencode({"filename": name, "filesize": filesize, "offset": offset,
                                        "signature": signature(self.token, name, str(offset))})
        request = (f"POST /file/upload?{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.token}\r\n"
                   f"Content-Type: application/octet-stream\r\n{headers}\r\n").encode() + body
        sock = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
        sock.sendall(request)
        return sock


def status_line(sock: socket.socket, rest: bytes = b"") -> bytes:
    """Send `rest`, end sending, read the answer's status line."""
    sock.sendall(rest)
    sock.shutdown(socket.SHUT_WR)
    answer = b""
    while b"\r\n" not in answer and (got := sock.recv(4096)):
        answer += got
    return answer.split(b"\r\n", 1)[0]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def jack_rose(server, make_users):
    jack, rose = make_users(2)
    return RawFiles(server, jack), RawFiles(server, rose)


def test_raw_chunks_resume_mix_with_base64_and_arrive_intact(server, jack_rose):
    jack, rose = jack_rose
    name, data = new_name(".mp4"), os.urandom(300_000)
    assert jack.raw(name, data[:100_000], 0, len(data))[2]["FI"] == "100000"

    # jack@android lost the connection: an empty body is a probe saying where to resume
    status, _, headers = jack.raw(name, b"", 0, len(data))
    assert (status, headers["FI"]) == (200, "100000")
    # a chunk at the wrong offset is refused with where to resume, and nothing is stored
    status, body, headers = jack.raw(name, data[150_000:200_000], 150_000, len(data))
    assert (status, headers["FI"]) == (409, "100000") and isinstance(body, bytes) and body
    assert rose.call("/file/download", filename=name)[0] == 404  # not complete yet

    # the contract's base64 form and raw bodies continue the same file
    assert jack.upload(name, data[100_000:200_000], 100_000, len(data))[2]["FI"] == "200000"
    assert jack.raw(name, data[200_000:], 200_000, len(data))[2]["FI"] == "300000"

    status, body, headers = rose.call("/file/download", method="GET", filename=name)
    assert (status, headers["FI"], md5(body)) == (200, "300000", md5(data))
    assert rose.call("/file/check", filename=name, md5=md5(data))[0] == 200
    # the complete file takes no more chunks
    status, _, headers = jack.raw(name, data[:10], 0, len(data))
    assert (status, headers["FI"]) == (409, "300000")


def test_raw_upload_is_authorised_like_the_form(jack_rose):
    jack, rose = jack_rose
    name = new_name()
    assert jack.raw(name, b"jack's", 0, 12)[0] == 200
    assert rose.raw(name, b"rose's", 6, 12)[0] == 403  # the first uploader owns the name
    assert rose.raw(name, b"", 0, 12)[0] == 403
    assert jack.raw(name, b"photo!", 6, 12, sign=False, signature="00" * 32)[0] == 401
    assert jack.raw(name, b"photo!", 6, 12, sign=False,
                    signature=signature(jack.token, name, "0"))[0] == 401  # another offset's
    assert jack.raw(name, b"photo!", 6, 12, bearer="")[0] == 401  # no token at all
    assert jack.raw(name, b"photo!", 6, 12, bearer="made-up")[0] == 401
    # the design document's way: the token as a parameter
    status, _, headers = jack.raw(name, b" photo", 6, 12, bearer="", token=jack.token)
    assert (status, headers["FI"]) == (200, "12")
    assert rose.call("/file/download", filename=name)[1] == b"jack's photo"


def test_raw_chunk_past_filesize_and_bad_parameters(jack_rose):
    jack, _ = jack_rose
    name = new_name()
    status, body, _ = jack.raw(name, b"0123456789", 0, 5)
    assert status == 400 and b"body" in body
    assert jack.raw(name, b"01234", 0, "five")[0] == 400
    assert jack.raw("short.jpg", b"01234", 0, 5)[0] == 400
    assert jack.raw(name, b"", 0, 5)[2]["FI"] == "0"  # nothing was stored


def test_oversize_raw_upload_is_refused(make_server, make_users):
    srv = make_server(max_file_bytes=1000)
    jack, = make_users(1, srv=srv)
    files = RawFiles(srv, jack)
    status, body, _ = files.raw(new_name(), b"x" * 10, 0, 1001)
    assert status == 413 and isinstance(body, bytes)
    name = new_name()
    assert files.raw(name, b"x" * 1000, 0, 1000)[2]["FI"] == "1000"
    assert files.call("/file/download", filename=name)[1] == b"x" * 1000


def test_bodies_cut_short_too_long_or_without_length(server, jack_rose):
    jack, _ = jack_rose
    name = new_name()
    # the client announces 1,000 bytes and stops after 10: nothing is counted
    assert jack.head_only(server, name, 5000, 0, "Content-Length: 1000\r\n", b"x" * 10).startswith(b"HTTP/1.1 400")
    assert jack.raw(name, b"", 0, 5000)[2]["FI"] == "0"
    # more than a chunk (8 MiB) is refused from the headers, before the body is read
    assert jack.head_only(server, name, 20_000_000, 0, "Content-Length: 9000000\r\n").startswith(b"HTTP/1.1 413")
    # a chunked body has no length to check against filesize up front
    assert jack.head_only(server, name, 5000, 0, "Transfer-Encoding: chunked\r\n", b"0\r\n\r\n") \
        .startswith(b"HTTP/1.1 411")
    jack.raw_all(name, os.urandom(5000), 2000)


def test_a_client_expecting_100_continue_is_told_to_go_on(server, jack_rose):
    """curl asks before sending a body over 1 MiB; the answer comes when the body is read."""
    jack, rose = jack_rose
    name, data = new_name(), os.urandom(1_500_000)
    with jack.begin(server, name, len(data), 0, f"Content-Length: {len(data)}\r\nExpect: 100-continue\r\n") as sock:
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
        assert status_line(sock, data) == b"HTTP/1.1 200 OK"
    assert md5(rose.call("/file/download", filename=name)[1]) == md5(data)


def test_two_uploads_of_one_chunk_at_once_store_one_of_them(jack_rose):
    jack, rose = jack_rose
    name, size = new_name(), 2_000_000
    chunks = [os.urandom(1_000_000), os.urandom(1_000_000)]
    answers = [None, None]

    def send(i: int) -> None:
        answers[i] = jack.raw(name, chunks[i], 0, size)
    threads = [threading.Thread(target=send, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(a[0] for a in answers) == [200, 409]
    winner = chunks[[a[0] for a in answers].index(200)]
    assert all(a[2]["FI"] == "1000000" for a in answers)
    tail = os.urandom(1_000_000)
    assert jack.raw(name, tail, 1_000_000, size)[0] == 200
    assert md5(rose.call("/file/download", filename=name)[1]) == md5(winner + tail)


def test_chunks_received_at_once_beyond_the_memory_buffers_arrive_intact(server, jack_rose):
    """Chunks up to 1 MiB are received into a few reused memory buffers, others (and those
    arriving while every buffer is taken) into spool files: twelve files, one with 3 MB chunks,
    sent two chunks each, the twelve first chunks at once, then the twelve second ones."""
    jack, rose = jack_rose
    sizes = [3_000_000 if i == 5 else 1_048_576 for i in range(12)]
    files = [(new_name(), os.urandom(2 * size)) for size in sizes]
    for half in (0, 1):
        socks = [jack.begin(server, name, len(data), half * size, f"Content-Length: {size}\r\n",
                            data[half * size:half * size + 500_000]) for (name, data), size in zip(files, sizes)]
        for sock, (_, data), size in zip(socks, files, sizes):
            with sock:
                assert status_line(sock, data[half * size + 500_000:(half + 1) * size]) == b"HTTP/1.1 200 OK"
    for name, data in files:
        assert md5(rose.call("/file/download", filename=name)[1]) == md5(data)
    spool = Path(server.workdir) / "files" / "spool"
    assert not spool.exists() or list(spool.iterdir()) == []  # spool files have no names


def test_base64_form_still_forgives_line_breaks_and_url_safe_alphabet(jack_rose):
    jack, rose = jack_rose
    name, data = new_name(), os.urandom(3000)
    assert jack.call("/file/upload", filename=name, filesize=3000, offset=0,
                     bin=base64.encodebytes(data[:1500]).decode())[0] == 200
    assert jack.call("/file/upload", filename=name, filesize=3000, offset=1500,
                     bin=base64.urlsafe_b64encode(data[1500:]).decode())[0] == 200
    assert rose.call("/file/download", filename=name)[1] == data


def test_a_machine_restart_resumes_from_the_last_fsync(server, jack_rose):
    """Chunks are fsynced in the background every 16 MiB and before the last one's answer; a
    count made before the machine restarted is trusted only up to the last fsync (the page cache
    did not survive)."""
    jack, rose = jack_rose
    mib = 1024 * 1024
    name, data = new_name(".mov"), os.urandom(18 * mib)
    for at in range(0, 17 * mib, mib):
        assert jack.raw(name, data[at:at + mib], at, len(data))[2]["FI"] == str(at + mib)
    deadline = time.monotonic() + 10  # the 16 MiB fsync runs beside the uploads
    while (row := server.sql("SELECT size, durable FROM im_file WHERE name = %s", (name,))) != \
            [(17 * mib, 16 * mib)] and time.monotonic() < deadline:
        assert row in ([(17 * mib, 0)], [(17 * mib, None)]), row
        time.sleep(0.05)
    assert row == [(17 * mib, 16 * mib)]

    # the process restarted (same boot): everything counted is still there
    assert jack.raw(name, b"", 0, len(data))[2]["FI"] == str(17 * mib)
    # the machine restarted: the last mebibyte may be lost or garbage on disk
    server.sql("UPDATE im_file SET boot = 'a-boot-before-the-restart' WHERE name = %s", (name,))
    with open(Path(server.workdir) / "files" / "partial" / name, "r+b") as fh:
        fh.seek(16 * mib)
        fh.write(b"\0" * mib)
    status, _, headers = jack.raw(name, data[17 * mib:], 17 * mib, len(data))
    assert (status, headers["FI"]) == (409, str(16 * mib))
    jack.raw_all_from(name, data, 16 * mib, mib)
    assert md5(rose.call("/file/download", filename=name)[1]) == md5(data)
    assert server.sql("SELECT size, durable, complete FROM im_file WHERE name = %s", (name,)) == \
        [(len(data), len(data), True)]


def test_raw_upload_under_gunicorn(server, make_users, tmp_path):
    """Two gevent workers of gunicorn share the files directory and the row locks."""
    jack, = make_users(1)
    proc, log, port = start_gunicorn(server.database_url, tmp_path)
    try:
        http = Http(f"http://127.0.0.1:{port}")
        files = RawFiles(server, jack, http)
        name, data = new_name(), os.urandom(3_000_000)
        files.raw_all(name, data, 1_000_000)
        status, body, headers = files.call("/file/download", filename=name, offset=1_000_000,
                                           block_size=1_500_000)
        assert (status, headers["FI"], body) == (200, "3000000", data[1_000_000:2_500_000])
    finally:
        proc.kill()
        proc.wait()
