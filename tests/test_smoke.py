"""The newcomer's path: a user logs in over TCP and over HTTP."""

from im import protocol


def test_login_over_tcp_and_http(server, make_users, connect):
    jack, = make_users(1)
    client = connect(jack, res="android")
    assert client.token
    assert client.heartbeat()["time"]
    http = server.http()
    token = http.login(jack, "pw")
    assert token and token != client.token
    status, body, _ = http.call("POST", "/api/QID_NO_SUCH_THING", {})
    assert status == 404 and body["code"] == "not_found"


def test_unknown_msgtype_keeps_connection(server, make_users, connect):
    jack, = make_users(1)
    client = connect(jack)
    client.send(0x7777, {"msgid": "x"})
    _, ack = client.wait(protocol.IM_MESSAGE_ACK)
    assert ack == {"type": str(0x7777), "msgid": "x", "err": ack["err"], "code": "unknown_type"}
    assert client.heartbeat()
