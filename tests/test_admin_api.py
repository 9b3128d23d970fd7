"""The admin API's departments, online counts and broadcast (PROTOCOL.md §4, §6.18)."""

import secrets

import pytest

from im import protocol
from im.client import Http, HttpError, rows
from support import ADMIN_KEY


def dept_ver(server, make_users) -> int:
    reader = server.http()
    reader.login(make_users(1)[0], "pw")
    return int(reader.qid("QID_IM_GET_DEPT_VER")["result"])


def status_of(admin: Http, method: str, path: str, body=None) -> tuple[int, str]:
    status, payload, _ = admin.call(method, f"/admin{path}", body)
    return status, payload.get("code", "") if isinstance(payload, dict) else ""


def test_departments_created_changed_and_deleted(server, make_users):
    admin, t = server.admin(), "d" + secrets.token_hex(3)
    start = dept_ver(server, make_users)
    assert status_of(admin, "POST", "/depts", {"deptid": f"{t}hq", "pid": "0", "name": "HQ"}) == (201, "")
    assert status_of(admin, "POST", "/depts", {"deptid": f"{t}it", "pid": f"{t}hq", "name": "IT", "ord": 2})[0] == 201
    again = {"deptid": f"{t}hq", "pid": "0", "name": "Again"}
    assert status_of(admin, "POST", "/depts", again) == (409, "already_exists")
    orphan = {"deptid": f"{t}x", "pid": f"{t}none", "name": "X"}
    assert status_of(admin, "POST", "/depts", orphan) == (400, "bad_request")
    assert status_of(admin, "POST", "/depts", {"deptid": f"{t}y", "pid": "0", "name": ""}) == (400, "bad_request")
    assert status_of(admin, "POST", "/depts", {"deptid": "a b", "pid": "0", "name": "Space"})[0] == 400
    assert dept_ver(server, make_users) == start + 2

    assert admin.admin("PATCH", f"/depts/{t}it", {"name": "Information"})["name"] == "Information"
    assert dept_ver(server, make_users) == start + 3
    admin.admin("PATCH", f"/depts/{t}it", {"name": "Information"})  # no change, no new version
    assert dept_ver(server, make_users) == start + 3
    assert status_of(admin, "PATCH", f"/depts/{t}hq", {"pid": f"{t}it"}) == (400, "bad_request")  # a cycle
    assert status_of(admin, "PATCH", f"/depts/{t}hq", {"colour": "red"}) == (400, "bad_request")
    assert status_of(admin, "PATCH", f"/depts/{t}nope", {"name": "N"}) == (404, "not_found")

    assert status_of(admin, "DELETE", f"/depts/{t}hq")[0] == 400  # it still has IT
    assert status_of(admin, "DELETE", f"/depts/{t}it") == (200, "")
    assert status_of(admin, "DELETE", f"/depts/{t}it") == (404, "not_found")
    assert dept_ver(server, make_users) == start + 4

    reader = server.http()
    reader.login(make_users(1)[0], "pw")
    mine = [r for r in rows(reader.qid("QID_IM_GET_DEPT_LIST")) if r["deptid"].startswith(t)]
    assert mine == [{"deptid": f"{t}hq", "pid": "0", "name": "HQ", "ord": "0"}]


def test_admin_key_is_required(server, make_server):
    wrong = Http(server.base_url, "not-the-key")
    assert status_of(wrong, "POST", "/depts", {"deptid": "k1", "pid": "0", "name": "K"}) == (401, "not_authenticated")
    assert status_of(wrong, "GET", "/online") == (401, "not_authenticated")
    assert status_of(wrong, "POST", "/broadcast", {"to": "*", "body": "hi"}) == (401, "not_authenticated")
    keyless = make_server(admin_key="")
    for method, path in (("POST", "/depts"), ("GET", "/online"), ("POST", "/broadcast")):
        assert status_of(Http(keyless.base_url, ADMIN_KEY), method, path, {})[0] == 404


def test_broadcast_to_a_list(server, make_users, connect):
    rose, tom = make_users(2)
    rose_pc = connect(rose)
    result = server.admin().admin("POST", "/broadcast", {"to": [rose, tom, "nobody-" + rose, rose],
                                                         "body": "maintenance at 22:00"})
    assert result == {"stored": 2, "delivered": 1, "unknown": ["nobody-" + rose]}

    _, frame = rose_pc.wait(protocol.IM_MESSAGE, 5, **{"from": "system"})
    assert (frame["to"], frame["type"], frame["body"]) == (rose, "0", "maintenance at 22:00")
    stored = server.sql("SELECT msgto, msg FROM tp_im_message WHERE msgfrom = 'system' AND msgto = ANY(%s)",
                        ([rose, tom],))
    assert sorted(stored) == sorted([(rose, "maintenance at 22:00"), (tom, "maintenance at 22:00")])

    # tom was offline: he finds it among his offline messages
    tom_http = server.http()
    tom_http.login(tom, "pw")
    offline = rows(tom_http.qid("QID_IM_GET_OFFLINE_MSG"))
    assert [(m["from"], m["body"]) for m in offline] == [("system", "maintenance at 22:00")]


@pytest.mark.parametrize("body", [{"to": "everyone", "body": "x"}, {"to": [1, 2], "body": "x"},
                                  {"to": "*"}, {"to": [], "body": 5}])
def test_broadcast_bad_requests(server, body):
    assert status_of(server.admin(), "POST", "/broadcast", body) == (400, "bad_request")


def test_online_counts_and_broadcast_to_everyone(make_server, make_users, connect):
    srv = make_server()
    jack, rose, tom = make_users(3, srv=srv)
    admin = srv.admin()
    assert admin.admin("GET", "/online")["connections"] == 0
    jack_pc = connect(jack, srv=srv)
    connect(jack, res="android", srv=srv)
    online = admin.admin("GET", "/online")
    assert (online["users"], online["connections"]) == (1, 2)
    assert list(online["nodes"].values()) == [{"users": 1, "connections": 2}]

    admin.admin("PATCH", f"/users/{tom}", {"disabled": True})
    result = admin.admin("POST", "/broadcast", {"to": "*", "body": "hello all"})
    assert (result["stored"], result["delivered"], result["unknown"]) == (2, 1, [])
    jack_pc.wait(protocol.IM_MESSAGE, 5, **{"from": "system", "body": "hello all"})
    assert sorted(r[0] for r in srv.sql("SELECT msgto FROM tp_im_message WHERE msgfrom = 'system'")) \
        == sorted([jack, rose])
    with pytest.raises(HttpError):
        admin.admin("POST", "/broadcast", {"to": "*", "body": "x" * 5000})
