"""Accounts and sessions: users, password logins, tokens, limits on failed logins (§1.5, §2.1, §4).

`login()` serves both transports; the TCP handlers for IM_LOGIN / IM_LOGOUT / IM_HEARTBEAT
and the cross-process `kick` event live here too.
"""

import hashlib
import logging
import secrets
from datetime import timedelta

from im import metrics, protocol, runtime, validate
from im.features import tokens
from im.protocol import msgid_of
from im.errors import ImError
from im.passwords import dummy_hash, hash_password, hash_passwords, verify_password
from im.registry import LOGIN_HOOKS, never_waits, on_event, tcp_handler
from im.store import accounts as store
from im.timefmt import now, now_text

log = logging.getLogger("im.accounts")

MAX_PASSWORD = 200
MAX_RES = 100
MAX_LOGIN_FAILURES = 3


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def new_token(cur, uid: str) -> str:
    token = secrets.token_urlsafe(32)
    store.insert_token(cur, token_hash(token), uid, now() + timedelta(seconds=runtime.cfg.token_ttl_s))
    return token


def _check_limits(addr: str, uid: str) -> None:
    cfg = runtime.cfg
    per_uid_addr, per_addr = cfg.login_failures_per_uid_addr, cfg.login_failures_per_addr
    if not (per_uid_addr or per_addr):
        return
    with runtime.db.transaction() as cur:
        uid_addr_count, addr_count = store.count_failures(cur, addr, uid)
    if per_uid_addr and uid_addr_count >= per_uid_addr or per_addr and addr_count >= per_addr:
        log.info("login rate limited uid=%s addr=%s", uid, addr)
        raise ImError("rate_limited", "too many failed logins, try again later")


def _fail(addr: str, uid: str, why: str) -> ImError:
    log.info("login failed uid=%s addr=%s reason=%s", uid, addr, why)
    metrics.LOGIN_FAILURES.inc()
    with runtime.db.transaction() as cur:
        store.record_failure(cur, addr, uid)
    return ImError("auth_failed", "wrong user id or password")


def login_password(uid, pwd, addr: str) -> tuple[str, str]:
    """Verify a password login; returns (uid, new token). Both failures cost one KDF run."""
    if not isinstance(uid, str) or not isinstance(pwd, str) or len(pwd) > MAX_PASSWORD \
            or not validate.UID_RE.match(uid):
        raise ImError("auth_failed", "wrong user id or password")
    _check_limits(addr, uid)
    with runtime.db.transaction() as cur:
        auth = store.get_auth(cur, uid)
    ok = verify_password(pwd, auth[0] if auth else dummy_hash(runtime.cfg.kdf_cost))
    if not auth or not ok:
        raise _fail(addr, uid, "unknown user" if not auth else "wrong password")
    if auth[1]:
        raise ImError("forbidden", "account disabled")
    with runtime.db.transaction() as cur:
        token = new_token(cur, uid)
    metrics.PASSWORD_LOGINS.inc()
    return uid, token


def authenticate(token) -> tuple[str, bytes]:
    """(uid, token hash) of a live token; not_authenticated otherwise."""
    if not isinstance(token, str) or not 0 < len(token) <= 200:
        raise ImError("not_authenticated", "missing or malformed token")
    digest = token_hash(token)
    owner = tokens.owner(digest)
    if owner is None:
        raise ImError("not_authenticated", "invalid, expired or revoked token")
    if owner[1]:
        raise ImError("forbidden", "account disabled")
    return owner[0], digest


def create_user(uid, pwd, fields: dict) -> bool:
    """Create one user; False if the uid exists. Fields are validated here."""
    uid, pwd, clean = _new_user(uid, pwd, fields)
    pwd_hash = hash_password(pwd, runtime.cfg.kdf_cost)
    with runtime.db.transaction() as cur:
        ver = store.bump_contacts_version(cur)
        return store.insert_user(cur, uid, pwd_hash, clean, ver)


def create_users(users: list) -> tuple[int, int]:
    """Create many users in one transaction; returns (created, existing)."""
    checked = [_new_user(u.get("uid"), u.get("pwd"), u) if isinstance(u, dict)
               else validate.json_object(u, "users[]") for u in users]
    with runtime.db.transaction() as cur:
        existing = store.existing_uids(cur, [c[0] for c in checked])
    todo = {c[0]: c for c in checked if c[0] not in existing}
    hashes = dict(zip(todo, hash_passwords([c[1] for c in todo.values()], runtime.cfg.kdf_cost)))
    created = 0
    with runtime.db.transaction() as cur:
        ver = store.bump_contacts_version(cur) if todo else 0
        for uid, (_, _, clean) in todo.items():
            created += store.insert_user(cur, uid, hashes[uid], clean, ver)
    return created, len(users) - created


def _new_user(uid, pwd, fields: dict) -> tuple[str, str, dict]:
    uid = validate.uid(uid, "uid", allow_reserved=False)
    pwd = validate.string({"pwd": pwd}, "pwd", MAX_PASSWORD, min_len=1)
    clean = validate.profile(fields)
    for key, limit in (("name", 50), ("deptid", 50)):
        if key in fields:
            clean[key] = validate.string(fields, key, limit)
    return uid, pwd, clean


def set_password(uid: str, new_pwd: str, keep_token: bytes | None, reason: str = "password_changed") -> None:
    """Change a password, revoke every token but `keep_token`, kick the other connections."""
    pwd_hash = hash_password(new_pwd, runtime.cfg.kdf_cost)
    with runtime.db.transaction() as cur:
        if not store.update_user(cur, uid, {"pwd_hash": pwd_hash}, None):
            raise ImError("not_found", f"no user {uid}")
        store.revoke_user_tokens(cur, uid, keep=keep_token)
    kick_user(uid, reason, keep_token)


def kick_user(uid: str, reason: str, keep_token: bytes | None = None) -> None:
    """Kick uid's connections in every process, except those logged in with `keep_token`."""
    runtime.router.emit("kick", uid=uid, reason=reason, keep=keep_token.hex() if keep_token else "")


@on_event("kick")
def _kick_local(event: dict) -> None:
    keep = event.get("keep") or ""
    for conn in runtime.router.connections(event.get("uid", "")):
        if not keep or conn.token_hash is None or conn.token_hash.hex() != keep:
            conn.kick(event.get("reason", "kicked"))


# --- TCP session frames ----------------------------------------------------------------

_beat: tuple[str, bytes] = ("", b"")


@tcp_handler(protocol.IM_HEARTBEAT, auth=False, inline=never_waits)
def heartbeat(conn, body: dict) -> None:
    """Answered from the read callback: the answer frame is encoded once per second, the
    resolution of its time."""
    global _beat
    text = now_text()
    if _beat[0] != text:
        _beat = (text, protocol.encode(protocol.IM_HEARTBEAT, {"time": text}))
    conn.send_raw(_beat[1])


@tcp_handler(protocol.IM_LOGIN, auth=False)
def tcp_login(conn, body: dict) -> None:
    msgid = msgid_of(body)
    if conn.uid is not None:
        raise ImError("bad_request", "already logged in")
    res = body.get("res", "")
    if not isinstance(res, str) or len(res) > MAX_RES:
        raise ImError("bad_request", f"res: at most {MAX_RES} characters")
    try:
        if body.get("token") is not None:
            uid, digest = authenticate(body["token"])
            token = body["token"]
            if body.get("uid") not in (None, "", uid):
                raise ImError("auth_failed", "token does not belong to uid")
            metrics.TOKEN_LOGINS.inc()
        else:
            uid, token = login_password(body.get("uid"), body.get("pwd"), conn.addr)
            digest = token_hash(token)
    except ImError as err:
        if err.code == "not_authenticated":
            err = ImError("auth_failed", err.text)
        if err.code in ("auth_failed", "forbidden", "rate_limited"):
            conn.login_failures += 1
            if conn.login_failures >= MAX_LOGIN_FAILURES:
                conn.error(protocol.IM_LOGIN, msgid, err.code, err.text)
                conn.close("login_failures")
                return None
        raise err
    conn.uid, conn.res, conn.token_hash = uid, res, digest
    old = runtime.router.attach(conn)
    if old is not None:
        log.info("conflict: %s replaces %s", conn, old)
        old.kick("conflict")
    log.info("login uid=%s res=%s addr=%s", uid, res, conn.addr)
    conn.ack(protocol.IM_LOGIN, msgid, token=token)
    for hook in LOGIN_HOOKS:
        hook(conn)
    return None


@tcp_handler(protocol.IM_LOGOUT)
def tcp_logout(conn, body: dict) -> None:
    with runtime.db.transaction() as cur:
        store.revoke_token(cur, conn.token_hash)
    tokens.revoked(conn.token_hash)
    conn.ack(protocol.IM_LOGOUT, msgid_of(body))
    conn.close("logout")
