"""Upload forms as `multipart/form-data` (what browsers and `curl -F` send, PROTOCOL.md §3): the
server reads a form body whole and splits it itself, and hands what it is unsure of to werkzeug."""

import base64
import hashlib
import os
import urllib.parse

import pytest

from test_files import Files, new_name, signature

BOUNDARY = "----formboundary7MA4YWxkTrZu0gW"


def part(name: str, value: str | bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    value = value.encode() if isinstance(value, str) else value
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


def form(*parts: bytes, preamble: bytes = b"", padding: bytes = b"") -> bytes:
    body = preamble + b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    return body.replace(f"--{BOUNDARY}\r\n".encode(), f"--{BOUNDARY}".encode() + padding + b"\r\n")


class MultipartFiles(Files):
    def post(self, body: bytes, query: dict | None = None):
        path = "/file/upload" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        return self.http.call("POST", path, raw=body, token=self.token,
                              headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})

    def chunk_parts(self, name: str, data: bytes, offset: int, filesize: int) -> list[bytes]:
        return [part("filename", name), part("filesize", str(filesize)), part("offset", str(offset)),
                part("signature", signature(self.token, name, str(offset))),
                part("bin", base64.b64encode(data).decode())]


@pytest.fixture
def jack_rose(server, make_users):
    jack, rose = make_users(2)
    return MultipartFiles(server, jack), MultipartFiles(server, rose)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_a_file_uploaded_by_multipart_forms_arrives_intact(jack_rose):
    jack, rose = jack_rose
    name, data = new_name(), os.urandom(2_500_000)
    for at in range(0, len(data), 1_048_576):
        status, body, headers = jack.post(form(*jack.chunk_parts(name, data[at:at + 1_048_576], at, len(data))))
        assert (status, headers["FI"]) == (200, str(min(at + 1_048_576, len(data)))), body
    assert md5(rose.call("/file/download", filename=name)[1]) == md5(data)


@pytest.mark.parametrize("shape", [{"preamble": b"This is a multipart message.\r\n"}, {"padding": b"  \t"}])
def test_forms_with_a_preamble_or_padded_delimiters_are_read_too(jack_rose, shape):
    jack, _ = jack_rose
    name, data = new_name(), os.urandom(5000)
    status, body, headers = jack.post(form(*jack.chunk_parts(name, data, 0, len(data)), **shape))
    assert (status, headers["FI"]) == (200, "5000"), body


def test_query_string_first_then_the_first_of_repeated_fields(jack_rose):
    jack, rose = jack_rose
    name, data = new_name(), os.urandom(3000)
    wrong = signature(jack.token, name, "1")
    parts = jack.chunk_parts(name, data, 0, len(data))
    # the query string's offset and signature win over the form's; of two `bin`s, the first
    status, body, headers = jack.post(
        form(*parts[:2], part("offset", "1"), part("signature", wrong), parts[4], part("bin", "AAAA")),
        query={"offset": "0", "signature": signature(jack.token, name, "0")})
    assert (status, headers["FI"]) == (200, "3000"), body
    assert rose.call("/file/download", filename=name)[1] == data


@pytest.mark.parametrize("shape", [{}, {"padding": b" "}])  # read here, and by werkzeug
def test_a_bin_sent_as_a_file_part_is_the_chunk_unless_a_field_is(jack_rose, shape):
    """`curl -F bin=@chunk.b64` sends a file part: it was answered as a probe (the chunk never
    stored, so a client would send it again forever)."""
    jack, rose = jack_rose
    name, data = new_name(), os.urandom(3000)
    parts = jack.chunk_parts(name, data[:1000], 0, len(data))
    status, body, headers = jack.post(form(*parts[:4], part("bin", base64.b64encode(data[:1000]), "c.b64"), **shape))
    assert (status, headers["FI"]) == (200, "1000"), body
    # a plain field of the name wins over a file part, in either order
    parts = jack.chunk_parts(name, data[1000:], 1000, len(data))
    junk = part("bin", b"not base64 at all", "junk.bin")
    status, body, headers = jack.post(form(junk, *parts, **shape))
    assert (status, headers["FI"]) == (200, "3000"), body
    assert rose.call("/file/download", filename=name)[1] == data


@pytest.mark.parametrize("cut", [b"", b"--", b"\r\n"])
def test_a_form_without_its_closing_delimiter_is_refused_and_stores_nothing(jack_rose, cut):
    """Even right after a longer form: the server reuses its buffers, and what is left of
    the longer one past the short one's end must not complete it."""
    jack, _ = jack_rose
    name = new_name()
    longer = jack.chunk_parts(new_name(), b"y" * 60_000, 0, 60_000)
    assert jack.post(form(*longer))[0] == 200
    body = b"".join(jack.chunk_parts(name, b"x" * 100, 0, 100))[:-2] + cut
    status, text, _ = jack.post(body)
    assert status == 400 and text.startswith(b"body: not a readable form"), text
    probe = form(*jack.chunk_parts(name, b"", 0, 100)[:4])
    assert jack.post(probe)[2]["FI"] == "0"


def test_a_form_of_more_than_a_thousand_parts_is_refused(jack_rose):
    jack, _ = jack_rose
    name = new_name()
    filler = [part(f"f{i}", "") for i in range(1000)]
    status, text, _ = jack.post(form(*jack.chunk_parts(name, b"x" * 100, 0, 100), *filler))
    assert status == 413 and b"1000 form parts" in text
    assert jack.post(form(*jack.chunk_parts(name, b"x" * 100, 0, 100)[:4]))[2]["FI"] == "0"
