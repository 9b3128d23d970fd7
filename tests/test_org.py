"""Departments and contacts (PROTOCOL.md §2.5) and their CSV imports (`im dept|contacts import`)."""

import secrets
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from im.client import HttpError, rows


def tag() -> str:
    return "t" + secrets.token_hex(3)


def run_im(server, *args: str) -> subprocess.CompletedProcess:
    """`im ...` against the test server's database, as a sysadmin on the host would."""
    return subprocess.run([sys.executable, "-m", "im.cli", *args], cwd=server.workdir,
                          env=server.env(), capture_output=True, text=True, timeout=60)


def import_csv(server, kind: str, text: str) -> subprocess.CompletedProcess:
    path = Path(server.workdir) / f"{kind}-{tag()}.csv"
    path.write_text(text, encoding="utf-8")
    return run_im(server, kind, "import", str(path))


def reader_http(server, make_users):
    """An HTTP client logged in as a new user with no special rights."""
    http = server.http()
    http.login(make_users(1)[0], "pw")
    return http


def version(http, which: str) -> int:
    return int(http.qid(f"QID_IM_GET_{which}_VER")["result"])


def sync(http, ver: int, limit: int = 5000) -> tuple[dict[str, dict], int, list[list[dict]]]:
    """Page through QID_IM_GET_CONTACTS_LIST from `ver` as a client does: (uid → row, cursor, pages)."""
    seen: dict[str, dict] = {}
    pages = []
    while True:
        result = http.qid("QID_IM_GET_CONTACTS_LIST", ver=str(ver), limit=str(limit))
        page = rows(result)
        pages.append(page)
        for row in page:
            seen[row["uid"]] = row
        if page:
            ver = int(page[-1]["ver"])
        if result["more"] == "0":
            return seen, ver, pages


def test_departments_imported_from_csv(server, make_users):
    http = reader_http(server, make_users)
    t = tag()
    before = version(http, "DEPT")
    csv = f"deptid,pid,name,ord\n{t}hq,0,Head office,1\n{t}rd,{t}hq,R&D,2\n{t}ops,{t}hq,\"Ops, night\",3\n"
    done = import_csv(server, "dept", csv)
    assert done.returncode == 0, done.stderr
    assert "3 created" in done.stderr
    assert version(http, "DEPT") == before + 1

    listing = http.qid("QID_IM_GET_DEPT_LIST")
    mine = {r["deptid"]: r for r in rows(listing) if r["deptid"].startswith(t)}
    assert mine == {f"{t}hq": {"deptid": f"{t}hq", "pid": "0", "name": "Head office", "ord": "1"},
                    f"{t}rd": {"deptid": f"{t}rd", "pid": f"{t}hq", "name": "R&D", "ord": "2"},
                    f"{t}ops": {"deptid": f"{t}ops", "pid": f"{t}hq", "name": "Ops, night", "ord": "3"}}
    assert int(listing["ver"]) >= before + 1

    # the same file again changes nothing and bumps nothing
    again = import_csv(server, "dept", csv)
    assert again.returncode == 0 and "3 unchanged" in again.stderr
    assert version(http, "DEPT") == before + 1

    # one renamed row: one new version
    assert import_csv(server, "dept", csv.replace("R&D", "Research")).returncode == 0
    assert version(http, "DEPT") == before + 2


def test_bad_department_rows_are_reported_and_nothing_is_written(server, make_users):
    http = reader_http(server, make_users)
    t = tag()
    before = version(http, "DEPT")
    csv = (f"deptid,pid,name,ord\n{t}a,0,Fine,1\n{t}b,{t}nowhere,Orphan,1\n{t}c,0,,1\n"
           f"{t}d,0,Bad ord,x\n{t}a,0,Twice,2\n{t}e,{t}f,Loop,1\n{t}f,{t}e,Loop,1\n")
    done = import_csv(server, "dept", csv)
    assert done.returncode == 1
    for line in ("line 3: pid", "line 4: name", "line 5: ord", "line 6:", "line 7: pid: would make a cycle"):
        assert line in done.stderr, done.stderr
    assert ": line 2:" not in done.stderr
    assert version(http, "DEPT") == before
    assert not [r for r in rows(http.qid("QID_IM_GET_DEPT_LIST")) if r["deptid"].startswith(t)]
    assert import_csv(server, "dept", "id,parent\n1,0\n").returncode == 1


def test_contacts_full_then_incremental_sync(server, make_users):
    jack, rose, tom = make_users(3, name="Someone", position="Engineer")
    http = server.http()
    http.login(jack, "pw")
    everyone, cursor, _ = sync(http, 0)
    assert {jack, rose, tom} <= set(everyone)
    assert everyone[rose]["name"] == "Someone" and everyone[rose]["deleted"] == "0"
    assert cursor <= version(http, "CONTACTS")
    assert set(everyone[jack]) == {"uid", "name", "deptid", "position", "telephone", "cellphone",
                                   "email", "avatar", "sign", "ver", "deleted"}

    admin = server.admin()
    admin.admin("PATCH", f"/users/{rose}", {"name": "Rose", "cellphone": "+86 139"})
    admin.admin("PATCH", f"/users/{tom}", {"disabled": True})
    http.qid("QID_IM_SET_ROSTER_SIGN", sign="at sea")
    newcomer, = make_users(1)

    changed, cursor2, _ = sync(http, cursor)
    assert {rose, tom, jack, newcomer} <= set(changed)
    assert (changed[rose]["name"], changed[rose]["cellphone"]) == ("Rose", "+86 139")
    assert changed[tom]["deleted"] == "1"
    assert changed[jack]["sign"] == "at sea"
    assert cursor2 > cursor
    nothing, _, _ = sync(http, cursor2)
    assert not {jack, rose, tom, newcomer} & set(nothing)

    assert http.call("POST", "/api/QID_IM_GET_CONTACTS_LIST", {"ver": "x"})[0] == 400
    assert http.call("POST", "/api/QID_IM_GET_CONTACTS_LIST", {"limit": 20001})[0] == 400


def test_contacts_pages_never_split_a_version(server, make_users):
    http = reader_http(server, make_users)
    start = version(http, "CONTACTS")
    bulk = make_users(5)  # one version for all five
    singles = [make_users(1)[0] for _ in range(3)]
    seen, _, pages = sync(http, start, limit=2)
    order = [r["uid"] for page in pages for r in page if r["uid"] in set(bulk + singles)]
    assert order == sorted(bulk) + singles  # each exactly once, by version then uid
    first = next(page for page in pages if any(r["uid"] in bulk for r in page))
    assert {r["uid"] for r in first} >= set(bulk)  # the five came together on one page


def test_contacts_sync_misses_nothing_under_concurrent_changes(server, make_users):
    """Writers change names while a reader syncs incrementally; the reader ends up exact."""
    uids = make_users(8)
    reader = server.http()
    reader.login(uids[0], "pw")
    _, cursor, _ = sync(reader, version(reader, "CONTACTS") - 1)
    mirror: dict[str, str] = {}
    stop = threading.Event()

    def write(worker: int) -> None:
        admin = server.admin()
        for n in range(12):
            admin.admin("PATCH", f"/users/{uids[(worker + n) % len(uids)]}", {"name": f"w{worker}n{n}"})

    def read() -> None:
        nonlocal cursor
        while not stop.is_set():
            changed, cursor, _ = sync(reader, cursor, limit=3)
            mirror.update({u: r["name"] for u, r in changed.items() if u in uids})

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    reading = threading.Thread(target=read)
    reading.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    stop.set()
    reading.join(60)
    changed, _, _ = sync(reader, cursor)
    mirror.update({u: r["name"] for u, r in changed.items() if u in uids})
    stored = dict(server.sql("SELECT uid, name FROM im_user WHERE uid = ANY(%s)", (uids,)))
    assert mirror == stored


def test_contacts_imported_from_csv(server, make_users):
    t = tag()
    dept = import_csv(server, "dept", f"deptid,pid,name\n{t}sales,0,Sales\n")
    assert dept.returncode == 0, dept.stderr
    existing, = make_users(1)
    http = server.http()
    http.login(existing, "pw")
    before = version(http, "CONTACTS")
    csv = ("uid,name,deptid,position,telephone,cellphone,email,pwd\n"
           f"{t}ann,Ann,{t}sales,Manager,010-1234,,ann@example.com,secret1\n"
           f"{t}bob,Bob,,,,,,\n"
           f"{existing},Existing Person,{t}sales,Seller,,139 0000,,ignored\n")
    done = import_csv(server, "contacts", csv)
    assert done.returncode == 0, done.stderr
    assert "2 created, 1 updated" in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "uid,password" and len(lines) == 2 and lines[1].startswith(f"{t}bob,")
    server.http().login(f"{t}ann", "secret1")
    server.http().login(f"{t}bob", lines[1].split(",", 1)[1])
    server.http().login(existing, "pw")  # pwd only applies to new users

    changed, _, _ = sync(http, before)
    assert changed[f"{t}ann"]["deptid"] == f"{t}sales" and changed[f"{t}ann"]["email"] == "ann@example.com"
    assert (changed[existing]["name"], changed[existing]["cellphone"]) == ("Existing Person", "139 0000")
    after = version(http, "CONTACTS")

    again = import_csv(server, "contacts", csv)
    assert again.returncode == 0 and "3 unchanged" in again.stderr and again.stdout == ""
    assert version(http, "CONTACTS") == after

    bad = import_csv(server, "contacts",
                     "uid,name,deptid,position,telephone,cellphone,email\n"
                     f"{t}carl,Carl,,,,,\n"
                     f"{t}dan,Dan,{t}nowhere,,,,\n"
                     f"{t}eve,Eve,,,,,not-an-email\n"
                     "system,System,,,,,\n")
    assert bad.returncode == 1
    for line in ("line 3: deptid", "line 4: email", "line 5: uid"):
        assert line in bad.stderr, bad.stderr
    try:
        server.http().login(f"{t}carl", "pw")
        raise AssertionError("carl must not exist: a bad file imports nothing")
    except HttpError as err:
        assert err.status == 401


def test_versions_polled_at_once_each_get_their_own_and_the_latest(server, make_users):
    """Version polls waiting at the same moment share one read: each still gets the version it
    asked for, with every change committed before it asked."""
    users = make_users(8)
    clients = [server.http() for _ in users]
    for http, uid in zip(clients, users):
        http.login(uid, "pw")
    before = version(clients[0], "DEPT")
    assert import_csv(server, "dept", f"deptid,pid,name,ord\n{tag()},0,New,1\n").returncode == 0
    expected = {"DEPT": version(clients[0], "DEPT"), "CONTACTS": version(clients[0], "CONTACTS")}
    assert expected["DEPT"] > before
    barrier = threading.Barrier(len(clients))

    def poll(k: int) -> tuple[str, int]:
        which = ("DEPT", "CONTACTS")[k % 2]
        barrier.wait()
        return which, version(clients[k], which)

    with ThreadPoolExecutor(len(clients)) as pool:
        answers = list(pool.map(poll, range(len(clients))))
    assert answers == [(which, expected[which]) for which, _ in answers]
    assert {which for which, _ in answers} == {"DEPT", "CONTACTS"}
