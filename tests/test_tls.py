"""TLS (PROTOCOL.md §1.1, §5): with tls_cert and tls_key, the same frames and the same HTTP API
travel inside TLS."""

import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request

import pytest

from im import protocol
from support import ADMIN_KEY

PW = "pw"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
    return str(cert), str(key)


def https(srv, cert: str, method: str, path: str, body=None, token: str = ADMIN_KEY) -> tuple[int, dict]:
    """An HTTPS call that verifies the server's certificate."""
    context = ssl.create_default_context(cafile=cert)
    req = urllib.request.Request(f"https://127.0.0.1:{srv.http_port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_tcp_and_http_speak_tls(make_server, certificate):
    cert, key = certificate
    srv = make_server(tls_cert=cert, tls_key=key)
    assert https(srv, cert, "POST", "/admin/users", {"uid": "jack", "pwd": PW}) == (201, {"uid": "jack"})
    assert https(srv, cert, "POST", "/admin/users", {"uid": "rose", "pwd": PW})[0] == 201

    jack = srv.client(tls=True)
    ack = jack.login("jack", PW, res="pc")
    assert jack.heartbeat()["time"]
    status, body = https(srv, cert, "POST", "/api/QID_IM_GET_GROUP_LIST", {}, token=ack["token"])
    assert (status, body["type"]) == (200, "table")

    rose = srv.client(tls=True)
    rose.login("rose", PW, res="phone")
    jack.message("rose", "over TLS")
    _, got = rose.wait(protocol.IM_MESSAGE, body="over TLS")
    assert got["from"] == "jack"


def test_plain_and_silent_clients_are_turned_away(make_server, certificate):
    cert, key = certificate
    srv = make_server(tls_cert=cert, tls_key=key, login_timeout_s=1)
    plain = srv.client()
    plain.send(protocol.IM_HEARTBEAT, {})
    assert plain.wait_closed(timeout=5) == []
    with pytest.raises(OSError):  # plain HTTP to the HTTPS port
        srv.http().call("GET", "/api/login")
    silent = socket.create_connection(("127.0.0.1", srv.tcp_port))  # never starts the handshake
    silent.settimeout(5)
    started = time.monotonic()
    assert silent.recv(100) == b""
    assert time.monotonic() - started < 4
    silent.close()
    assert srv.client(tls=True).heartbeat()  # the server is unharmed
    assert "Traceback" not in srv.log_tail(200)
    assert "TLS handshake failed" in srv.log_tail(200)
