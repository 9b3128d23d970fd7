"""A QID answers the same whichever way its parameters come: a JSON body takes the WSGI fast
path, form fields and chunked bodies go through Flask (issue 7)."""

import http.client

from support import PASSWORD

QID = "/api/QID_IM_GET_ROSTER_MSG_HISTORY"
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def ask(server, token: str, path: str, raw: bytes, headers: dict) -> tuple[int, dict]:
    status, body, _ = server.http().call("POST", path, raw=raw, token=token, headers=headers)
    return status, body


def chunked(server, token: str, path: str, raw: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        conn.request("POST", path, iter([raw]), encode_chunked=True,
                     headers={**JSON, "Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_json_form_and_chunked_parameters_give_the_same_answer(server, make_users, connect):
    jack, rose = make_users(2)
    connect(jack).message(rose, "lunch?")
    token = server.http().login(rose, PASSWORD)
    as_json = ask(server, token, QID, f'{{"msgto": "{jack}", "limit": "5"}}'.encode(), JSON)
    assert as_json[0] == 200 and as_json[1]["result"][0][6] == {"n": "body", "v": "lunch?"}
    assert ask(server, token, QID, f"msgto={jack}&limit=5".encode(), FORM) == as_json
    with_charset = {"Content-Type": "application/json; charset=utf-8"}
    assert ask(server, token, QID, f'{{"msgto": "{jack}", "limit": "5"}}'.encode(), with_charset) == as_json
    status, body = chunked(server, token, QID, f'{{"msgto": "{jack}", "limit": "5"}}'.encode())
    assert status == 200 and b"lunch?" in body


def test_errors_are_the_same_on_both_paths(server, make_users):
    jack, = make_users(1)
    token = server.http().login(jack, PASSWORD)
    for headers, raw in ((JSON, b"{}"), (FORM, b"a=1")):
        assert ask(server, "", "/api/QID_NO_SUCH", raw, headers)[1]["code"] == "not_authenticated"
        assert ask(server, "x" * 20, QID, raw, headers)[0] == 401
        status, body = ask(server, token, "/api/QID_NO_SUCH", raw, headers)
        assert (status, body["code"]) == (404, "not_found")
        status, body = ask(server, token, QID, raw, headers)  # msgto missing
        assert (status, body["code"]) == (400, "bad_request") and "msgto" in body["err"]
    for raw in (b"{not json", b"[1]"):
        status, body = ask(server, token, QID, raw, JSON)
        assert (status, body["code"]) == (400, "bad_request")
    status, body = ask(server, token, QID, b"", JSON)  # an empty body is {}
    assert (status, body["code"]) == (400, "bad_request") and "msgto" in body["err"]


def raw_exchange(server, request: bytes) -> bytes:
    """Send `request` as is on a fresh connection; what the server answers before closing."""
    import socket
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(request)
        got = b""
        while b"\r\n\r\n" not in got and (part := sock.recv(65536)):
            got += part
        return got


def test_headers_are_read_one_way_only(server, make_users):
    """`im serve` reads headers itself (im/web/headers.py): well-formed ones work in any case and
    repeated ones are joined; lines that could be read two ways are refused."""
    jack, = make_users(1)
    token = server.http().login(jack, PASSWORD)
    body = b'{"msgto": "nobody"}'
    good = (b"POST " + QID.encode() + b" HTTP/1.1\r\nHost: x\r\ncontent-TYPE: application/json\r\n"
            b"AUTHORIZATION: Bearer " + token.encode() + b"\r\nX-Tag: a\r\nX-Tag: b\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    assert raw_exchange(server, good).startswith(b"HTTP/1.1 200")
    length = f"Content-Length: {len(body)}\r\n".encode()
    for bad in (length + length.replace(b": ", b": 1"),     # two different lengths
                b"Content-Length : 5\r\n",                   # whitespace before the colon
                b"X-Folded: a\r\n  b\r\n" + length,          # obsolete line folding
                b"no colon here\r\n" + length,
                b"X-Long: " + b"a" * 70000 + b"\r\n" + length):
        request = b"POST " + QID.encode() + b" HTTP/1.1\r\nHost: x\r\n" + bad + b"\r\n" + body
        assert raw_exchange(server, request).startswith(b"HTTP/1.1 400"), bad[:40]
    assert raw_exchange(server, good).startswith(b"HTTP/1.1 200")  # the server is unharmed
