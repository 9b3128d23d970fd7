"""Departments and the contacts directory (PROTOCOL.md §2.5, §4): the QIDs, the admin
department actions and the CSV imports of `im dept import` / `im contacts import`.

Every writer follows the version discipline described in im/store/org.py: lock the version
row first, compare, and bump and stamp only when something really changes, so re-importing
the same file changes nothing and bumps no version.
"""

import csv
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

from im import runtime, shapes, validate
from im.batcher import database_lookup
from im.errors import ImError, bad_request
from im.features.accounts import MAX_PASSWORD
from im.passwords import hash_password
from im.registry import Caller, qid
from im.store import accounts as accounts_store
from im.store import org as store

log = logging.getLogger("im.org")

DEPTID_RE = re.compile(r"^[A-Za-z0-9._@-]{1,50}$")
ROOT = "0"
CONTACTS_LIMIT, CONTACTS_MAX = 5000, 20000
DEPT_PATCHABLE = {"pid", "name", "ord"}
INT32 = 2**31 - 1
IMPORT_VERSION_ROWS = 500  # rows stamped per version, so that one version stays one page
CONTACT_HEADER = ("uid", "name", "deptid", "position", "telephone", "cellphone", "email")


# --- QIDs -----------------------------------------------------------------------------------

# Clients poll the versions: requests waiting at the same moment share one read, made after
# each of them arrived (a client that just changed a version reads the new one).
_versions = database_lookup("versions", store.versions)


def _version_text(name: str) -> dict:
    return shapes.text(_versions.get(name))


@qid("QID_IM_GET_DEPT_VER")
def get_dept_ver(caller: Caller, params: dict) -> dict:
    return _version_text("dept")


@qid("QID_IM_GET_DEPT_LIST")
def get_dept_list(caller: Caller, params: dict) -> dict:
    """The whole tree; `ver` (ext) is a version the list is at least as new as."""
    with runtime.db.transaction() as cur:
        ver = store.version(cur, "dept")
        depts = store.list_depts(cur)
    return {**shapes.table(depts), "ver": str(ver)}


@qid("QID_IM_GET_CONTACTS_VER")
def get_contacts_ver(caller: Caller, params: dict) -> dict:
    return _version_text("contacts")


@qid("QID_IM_GET_CONTACTS_LIST")
def get_contacts_list(caller: Caller, params: dict) -> dict:
    ver = validate.integer(params, "ver", default=0, lo=0)
    limit = validate.integer(params, "limit", default=CONTACTS_LIMIT, lo=1, hi=CONTACTS_MAX)
    with runtime.db.transaction() as cur:
        rows, more = store.contacts_page(cur, ver or -1, limit)  # 0: everyone, even unstamped rows
    return shapes.table(rows, more)


# --- department checks ----------------------------------------------------------------------

def check_deptid(value, field_name: str = "deptid") -> str:
    if not isinstance(value, str) or not DEPTID_RE.match(value) or value == ROOT:
        raise bad_request(field_name, "1-50 characters of A-Z a-z 0-9 . _ @ -, not \"0\"")
    return value


def _check_pid(value) -> str:
    if value in (None, "", ROOT, 0):
        return ROOT
    return check_deptid(value, "pid")


def _dept_fields(params: dict, fields: Iterable[str]) -> dict:
    """Validated values of the department fields named in `fields`."""
    checks = {
        "pid": lambda: _check_pid(params.get("pid")),
        "name": lambda: validate.string(params, "name", 100, min_len=1),
        "ord": lambda: validate.integer(params, "ord", default=0, lo=-INT32, hi=INT32),
    }
    return {f: checks[f]() for f in fields}


def _parent_problem(parents: dict[str, str], deptid: str, pid: str) -> str | None:
    """Why `pid` cannot be deptid's parent in the tree `parents` (deptid → pid), or None."""
    if pid == ROOT:
        return None
    if pid not in parents:
        return f"no such department {pid!r}"
    node, steps = pid, 0
    while node != ROOT and node in parents and steps <= len(parents):
        if node == deptid:
            return "would make a cycle"
        node, steps = parents[node], steps + 1
    return None


# --- admin actions --------------------------------------------------------------------------

def create_dept(params: dict) -> dict:
    dept = {"deptid": check_deptid(params.get("deptid")), **_dept_fields(params, DEPT_PATCHABLE)}
    with runtime.db.transaction() as cur:
        store.lock_version(cur, "dept")
        if store.get_dept(cur, dept["deptid"]) is not None:
            raise ImError("already_exists", f"department {dept['deptid']} exists", 409)
        _check_parent(cur, dept["deptid"], dept["pid"])
        ver = store.bump_version(cur, "dept")
        store.upsert_dept(cur, dept)
    log.info("department %s created, dept version %d", dept["deptid"], ver)
    return dept


def patch_dept(deptid: str, params: dict) -> dict:
    unknown = set(params) - DEPT_PATCHABLE
    if unknown:
        raise bad_request(sorted(unknown)[0], "not a department field")
    changes = _dept_fields(params, set(params))
    with runtime.db.transaction() as cur:
        store.lock_version(cur, "dept")
        current = _existing_dept(cur, deptid)
        wanted = {**current, **changes}
        if wanted == current:
            return current
        if wanted["pid"] != current["pid"]:
            _check_parent(cur, deptid, wanted["pid"])
        ver = store.bump_version(cur, "dept")
        store.upsert_dept(cur, wanted)
    log.info("department %s changed, dept version %d", deptid, ver)
    return wanted


def delete_dept(deptid: str) -> None:
    with runtime.db.transaction() as cur:
        store.lock_version(cur, "dept")
        _existing_dept(cur, deptid)
        if store.has_children(cur, deptid):
            raise bad_request("deptid", "the department has sub-departments; move or delete them first")
        ver = store.bump_version(cur, "dept")
        store.delete_dept(cur, deptid)
    log.info("department %s deleted, dept version %d", deptid, ver)


def _existing_dept(cur, deptid: str) -> dict:
    dept = store.get_dept(cur, deptid)
    if dept is None:
        raise ImError("not_found", f"no department {deptid}")
    return dept


def _check_parent(cur, deptid: str, pid: str) -> None:
    problem = _parent_problem(store.dept_parents(cur), deptid, pid)
    if problem:
        raise bad_request("pid", problem)


# --- CSV imports ----------------------------------------------------------------------------

@dataclass
class ImportReport:
    """What an import did. With any `errors`, nothing was written (all or nothing)."""
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, what)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    passwords: list[tuple[str, str]] = field(default_factory=list)  # generated, for new users

    def add(self, line: int, what: str) -> None:
        self.problems.append((line, what))

    @property
    def errors(self) -> list[str]:
        return [f"line {line}: {what}" for line, what in sorted(self.problems)]


def _read_csv(stream: TextIO, required: tuple, optional: tuple,
              report: ImportReport) -> list[tuple[int, dict]]:
    """(line number, {column: stripped value}) per data row; header problems go to the report."""
    reader = csv.reader(stream)
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in required if c not in header]
    unknown = [c for c in header if c not in required + optional]
    if missing or unknown or len(set(header)) != len(header):
        report.add(1, f"header must name the columns {','.join(required)}"
                      f"{''.join(f'[,{c}]' for c in optional)} once each")
        return []
    rows = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            report.add(reader.line_num, f"expected {len(header)} columns, got {len(cells)}")
            continue
        rows.append((reader.line_num, {h: c.strip() for h, c in zip(header, cells)}))
    return rows


def _validated(rows: list[tuple[int, dict]], check, report: ImportReport) -> dict[str, tuple[int, dict]]:
    """key → (line, value) of the rows `check` accepts; the others are reported by line."""
    out: dict[str, tuple[int, dict]] = {}
    for line, raw in rows:
        try:
            key, value = check(raw)
        except ImError as err:
            report.add(line, err.text)
            continue
        if key in out:
            report.add(line, f"{key} already appears on line {out[key][0]}")
            continue
        out[key] = (line, value)
    return out


def _dept_row(raw: dict) -> tuple[str, dict]:
    dept = {"deptid": check_deptid(raw["deptid"]), **_dept_fields(raw, DEPT_PATCHABLE)}
    return dept["deptid"], dept


def import_depts(stream: TextIO) -> ImportReport:
    """Create or update the departments of a CSV file; others are left as they are."""
    report = ImportReport()
    depts = _validated(_read_csv(stream, ("deptid", "pid", "name"), ("ord",), report), _dept_row, report)
    with runtime.db.transaction() as cur:
        store.lock_version(cur, "dept")
        current = {d["deptid"]: d for d in store.list_depts(cur)}
        parents = {k: d["pid"] for k, d in current.items()} | {k: d["pid"] for k, (_, d) in depts.items()}
        for deptid, (line, dept) in depts.items():
            problem = _parent_problem(parents, deptid, dept["pid"])
            if problem:
                report.add(line, f"pid: {problem}")
        if report.problems:
            return report
        changed = [d for k, (_, d) in depts.items() if current.get(k) != d]
        if changed:
            ver = store.bump_version(cur, "dept")
            for dept in changed:
                store.upsert_dept(cur, dept)
            log.info("dept import: %d departments written, dept version %d", len(changed), ver)
    report.created = sum(1 for k in depts if k not in current)
    report.updated = len(changed) - report.created
    report.unchanged = len(depts) - len(changed)
    return report


def _contact_row(raw: dict) -> tuple[str, dict]:
    uid = validate.uid(raw["uid"], allow_reserved=False)
    fields = validate.profile({k: raw[k] for k in ("position", "telephone", "cellphone", "email")})
    fields["name"] = validate.string(raw, "name", 50)
    fields["deptid"] = check_deptid(raw["deptid"]) if raw["deptid"] else ""
    pwd = validate.string(raw, "pwd", MAX_PASSWORD, required=False)
    return uid, {"fields": fields, "pwd": pwd}


def import_contacts(stream: TextIO) -> ImportReport:
    """Create the users of a CSV file that do not exist and update the directory fields of
    those that do. `pwd` only applies to new users (a random one is generated when empty)."""
    report = ImportReport()
    contacts = _validated(_read_csv(stream, CONTACT_HEADER, ("pwd",), report), _contact_row, report)
    with runtime.db.transaction() as cur:
        known_depts = set(store.dept_parents(cur))
        existing = set(store.directory_entries(cur, list(contacts)))
    for line, contact in contacts.values():
        deptid = contact["fields"]["deptid"]
        if deptid and deptid not in known_depts:
            report.add(line, f"deptid: no such department {deptid!r}")
    if report.problems:
        return report
    hashes = _new_user_hashes({u: c for u, (_, c) in contacts.items() if u not in existing}, report)
    _write_contacts({u: c["fields"] for u, (_, c) in contacts.items()}, hashes, report)
    return report


def _new_user_hashes(new: dict[str, dict], report: ImportReport) -> dict[str, str]:
    """Password hashes of the new users, computed before the write locks anything."""
    hashes = {}
    for uid, contact in new.items():
        pwd = contact["pwd"]
        if not pwd:
            pwd = secrets.token_urlsafe(12)
            report.passwords.append((uid, pwd))
        hashes[uid] = hash_password(pwd, runtime.cfg.kdf_cost)
    return hashes


def _write_contacts(wanted: dict[str, dict], hashes: dict[str, str], report: ImportReport) -> None:
    created: set[str] = set()
    with runtime.db.transaction() as cur:
        store.lock_version(cur, "contacts")
        current = store.directory_entries(cur, list(wanted))
        todo = [u for u in wanted if current.get(u) != wanted[u]]
        for start in range(0, len(todo), IMPORT_VERSION_ROWS):
            ver = store.bump_version(cur, "contacts")
            for uid in todo[start:start + IMPORT_VERSION_ROWS]:
                if uid in current:
                    store.update_directory(cur, uid, wanted[uid], ver)
                elif accounts_store.insert_user(cur, uid, hashes[uid], wanted[uid], ver):
                    created.add(uid)
    report.passwords = [p for p in report.passwords if p[0] in created]
    report.created = len(created)
    report.updated = len(todo) - len(created)
    report.unchanged = len(wanted) - len(todo)
    if todo:
        log.info("contacts import: %d created, %d updated", report.created, report.updated)
