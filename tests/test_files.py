"""The file server (PROTOCOL.md §3): resumable uploads, downloads, checks, avatars."""

import base64
import hashlib
import hmac
import os
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def new_name(ext: str = ".jpg") -> str:
    return uuid.uuid4().hex + ext


def signature(token: str, subject: str, offset: str = "") -> str:
    return hmac.new(token.encode(), f"{subject}\n{offset}".encode(), hashlib.sha256).hexdigest()


class Files:
    """A file-server client for one user: signs every request with the user's token."""

    def __init__(self, server, uid: str):
        self.http = server.http()
        self.token = self.http.login(uid, "pw")

    def call(self, path: str, method: str = "POST", sign: bool = True, subject: str = "filename",
             headers: dict | None = None, bearer: str | None = None, **params):
        params = {k.replace("_", "-"): str(v) for k, v in params.items()}
        if sign:
            params["signature"] = signature(self.token, params.get(subject, ""), params.get("offset", ""))
        query = urllib.parse.urlencode(params)
        if method == "GET":
            return self.http.call("GET", f"{path}?{query}", token=bearer, headers=headers)
        return self.http.call(method, path, raw=query.encode(), token=bearer,
                              headers={**FORM, **(headers or {})})

    def upload(self, name: str, data: bytes, offset: int, filesize: int, **kw):
        return self.call("/file/upload", filename=name, filesize=filesize, offset=offset,
                         bin=base64.b64encode(data).decode(), **kw)

    def upload_all(self, name: str, data: bytes, chunk: int) -> None:
        for at in range(0, len(data), chunk):
            status, body, headers = self.upload(name, data[at:at + chunk], at, len(data))
            assert status == 200, body
            assert headers["FI"] == str(min(at + chunk, len(data)))


@pytest.fixture
def jack_rose(server, make_users):
    jack, rose = make_users(2)
    return Files(server, jack), Files(server, rose)


def test_upload_in_chunks_then_download_check_and_range(jack_rose):
    jack, rose = jack_rose
    name, data = new_name(), os.urandom(100_000)
    jack.upload_all(name, data, 30_000)

    status, body, headers = rose.call("/file/download", method="GET", filename=name)
    assert (status, body, headers["FI"]) == (200, data, "100000")
    assert headers["Content-Type"] == "application/octet-stream;charset=utf-8"
    status, body, headers = rose.call("/file/download", filename=name, offset=1000, block_size=500)
    assert (status, body, headers["FI"]) == (200, data[1000:1500], "100000")
    status, body, _ = rose.call("/file/download", filename=name, offset=99_990)
    assert (status, body) == (200, data[99_990:])

    status, body, headers = rose.call("/file/download", method="GET", filename=name,
                                      headers={"Range": "bytes=10-19"})
    assert (status, body, headers["Content-Range"]) == (206, data[10:20], "bytes 10-19/100000")
    status, body, headers = rose.call("/file/download", filename=name, headers={"Range": "bytes=-5"})
    assert (status, body) == (206, data[-5:])
    status, _, headers = rose.call("/file/download", filename=name, headers={"Range": "bytes=200000-"})
    assert (status, headers["Content-Range"]) == (416, "bytes */100000")

    assert rose.call("/file/check", filename=name, md5=hashlib.md5(data).hexdigest())[0] == 200
    assert rose.call("/file/check", method="GET", filename=name, md5=hashlib.md5(data).hexdigest().upper())[0] == 200
    assert rose.call("/file/check", filename=name, md5=hashlib.md5(b"other").hexdigest())[0] == 409
    assert rose.call("/file/check", filename=name, md5="nothex")[0] == 400


def test_interrupted_upload_resumes_where_the_server_says(server, jack_rose):
    jack, rose = jack_rose
    name, data = new_name(".zip"), os.urandom(50_000)
    assert jack.upload(name, data[:20_000], 0, len(data))[0] == 200
    assert rose.call("/file/download", filename=name)[0] == 404  # not complete yet

    # jack's app restarts and asks where to resume: an empty chunk is a probe
    status, _, headers = jack.upload(name, b"", 0, len(data))
    assert (status, headers["FI"]) == (200, "20000")
    # a chunk at the wrong offset is refused with where to resume
    status, body, headers = jack.upload(name, data[30_000:40_000], 30_000, len(data))
    assert (status, headers["FI"]) == (409, "20000")
    assert isinstance(body, bytes) and body  # a plain-text description

    # the server crashed mid-chunk earlier: bytes written but never counted stay invisible
    partial = Path(server.workdir) / "files" / "partial" / name
    with open(partial, "ab") as fh:
        fh.write(b"garbage from a crash")
    assert jack.upload(name, b"", 0, len(data))[2]["FI"] == "20000"

    for at in (20_000, 40_000):
        assert jack.upload(name, data[at:at + 20_000], at, len(data))[0] == 200
    status, body, _ = rose.call("/file/download", filename=name)
    assert (status, body) == (200, data)
    # the complete file takes no more chunks
    status, _, headers = jack.upload(name, data[:10], 0, len(data))
    assert (status, headers["FI"]) == (409, "50000")


@pytest.mark.parametrize("bad", ["../x", "../../etc/passwd", ".hidden0123456789abcdef", "a/b",
                                 "", "x" * 200, "short.jpg", "abcdefghijklmnopqrstu v.jpg",
                                 "0123456789abcdef/..", "%2e%2e%2f0123456789abcdef"])
def test_bad_file_names_are_refused(jack_rose, bad):
    jack, _ = jack_rose
    status, body, _ = jack.upload(bad, b"data", 0, 4)
    assert status == 400 and b"filename" in body
    assert jack.call("/file/download", filename=bad)[0] == 400
    assert jack.call("/file/check", filename=bad, md5="0" * 32)[0] == 400


def test_tokens_and_signatures(server, jack_rose):
    jack, _ = jack_rose
    name = new_name()
    jack.upload_all(name, b"hello world", 100)
    assert jack.call("/file/download", filename=name, sign=False)[0] == 401
    status, body, _ = jack.call("/file/download", filename=name, sign=False, signature="00" * 32)
    assert status == 401 and isinstance(body, bytes)
    # a signature over another offset does not authorise this one
    status, _, _ = jack.call("/file/download", sign=False, filename=name, offset=3,
                             signature=signature(jack.token, name, "0"))
    assert status == 401
    assert jack.call("/file/download", filename=name, bearer="")[0] == 401  # no token at all
    assert jack.call("/file/download", filename=name, bearer="revoked-or-made-up")[0] == 401
    # the design document's way: the token as a parameter
    status, body, _ = jack.call("/file/download", method="GET", bearer="", filename=name,
                                token=jack.token)
    assert (status, body) == (200, b"hello world")


def test_first_uploader_owns_the_name(jack_rose):
    jack, rose = jack_rose
    name = new_name()
    assert jack.upload(name, b"jack's", 0, 12)[0] == 200
    status, _, _ = rose.upload(name, b"rose's", 6, 12)
    assert status == 403
    assert rose.upload(name, b"", 0, 12)[0] == 403
    assert jack.upload(name, b" photo", 6, 12)[2]["FI"] == "12"


def test_chunk_past_filesize_and_bad_base64(jack_rose):
    jack, _ = jack_rose
    name = new_name()
    assert jack.upload(name, b"0123456789", 0, 5)[0] == 400
    status, body, _ = jack.call("/file/upload", filename=name, filesize=5, offset=0, bin="***")
    assert status == 400 and b"bin" in body


def test_oversize_upload_is_refused(make_server, make_users):
    srv = make_server(max_file_bytes=1000)
    jack, = make_users(1, srv=srv)
    files = Files(srv, jack)
    status, body, _ = files.upload(new_name(), b"x" * 10, 0, 1001)
    assert status == 413 and isinstance(body, bytes)
    assert files.upload(new_name(), b"x" * 10, 0, 1000)[0] == 200


def test_avatar_by_user_with_etag(server, jack_rose, make_users):
    jack, rose = jack_rose
    jack_uid, = make_users(1)
    owner = Files(server, jack_uid)
    name = new_name(".png")
    owner.upload_all(name, b"\x89PNG avatar", 100)
    owner.http.qid("QID_IM_SET_ROSTER_AVATAR", avatar=f"/file/{name}")

    status, body, headers = rose.call("/file/download/head", subject="uid", uid=jack_uid)
    assert (status, body) == (200, b"\x89PNG avatar")
    assert headers["ETag"] and "no-cache" in headers["Cache-Control"]
    status, _, _ = rose.call("/file/download/head", subject="uid", uid=jack_uid,
                             headers={"If-None-Match": headers["ETag"]})
    assert status == 304
    status, body, headers = rose.call("/file/download/head", filename=name)
    assert (status, body) == (200, b"\x89PNG avatar") and "max-age" in headers["Cache-Control"]
    # signed over the filename instead of the uid: refused
    assert rose.call("/file/download/head", subject="filename", uid=jack_uid)[0] == 401
    # a user without an avatar file
    assert rose.call("/file/download/head", subject="uid", uid=jack_uid + "x")[0] == 404


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_large_download_streams_with_bounded_memory(make_server, make_users):
    srv = make_server()
    jack, = make_users(1, srv=srv)
    files = Files(srv, jack)
    name, size = new_name(".iso"), 50 * 1024 * 1024
    data = os.urandom(size)
    files.upload_all(name, data, 4 * 1024 * 1024)
    baseline = _rss_kib(srv.proc.pid)

    query = urllib.parse.urlencode({"filename": name, "signature": signature(files.token, name)})
    req = urllib.request.Request(f"{srv.base_url}/file/download?{query}",
                                 headers={"Authorization": f"Bearer {files.token}"})
    digest, received, peak = hashlib.md5(), 0, baseline
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["FI"] == str(size)
        while block := resp.read(1024 * 1024):
            digest.update(block)
            received += len(block)
            if received % (8 * 1024 * 1024) < 1024 * 1024:
                time.sleep(0.05)  # a slow reader: the server must not buffer ahead
                peak = max(peak, _rss_kib(srv.proc.pid))
    assert received == size and digest.digest() == hashlib.md5(data).digest()
    assert peak - baseline < 15 * 1024, f"server RSS grew by {(peak - baseline) // 1024} MiB"
