"""The personal profile and password over HTTP (PROTOCOL.md §2.2).

Anyone may read a user's directory fields; the personal ones (sex, age, birthday, address,
zipcode) only the user and their friends. Only the user may change their own profile.
"""

import logging

from im import runtime, shapes, validate
from im.errors import ImError
from im.features import accounts
from im.passwords import verify_password
from im.registry import Caller, qid
from im.store import accounts as accounts_store
from im.store import profile as store

log = logging.getLogger("im.profile")


@qid("QID_IM_GET_USER_INFO")
def get_user_info(caller: Caller, params: dict) -> dict:
    uname = validate.uid(params.get("uname"), "uname")
    with runtime.db.transaction() as cur:
        found = store.get_info(cur, caller.uid, uname)
    if found is None:
        raise ImError("no_such_user", f"no user {uname}")
    info, close = found
    fields = store.PUBLIC_FIELDS + (store.PRIVATE_FIELDS if close else ())
    return shapes.one({k: info[k] for k in fields})


@qid("QID_IM_SET_USER_INFO")
def set_user_info(caller: Caller, params: dict) -> dict:
    uname = validate.string(params, "uname", 50, min_len=1)
    if uname != caller.uid:
        raise ImError("forbidden", "uname: you can only change your own profile")
    fields = validate.profile(params)
    with runtime.db.transaction() as cur:
        directory = set(fields) & accounts_store.DIRECTORY_FIELDS
        ver = accounts_store.bump_contacts_version(cur) if directory else None
        accounts_store.update_user(cur, caller.uid, fields, ver)
    log.info("profile set uid=%s fields=%s", caller.uid, ",".join(sorted(fields)))
    return shapes.text("1")


@qid("QID_IM_SET_USER_PWD")
def set_user_pwd(caller: Caller, params: dict) -> dict:
    """Change the caller's password; their other tokens are revoked and their other
    connections kicked (`password_changed`), the token of this call keeps working."""
    old = validate.string(params, "old_pwd", accounts.MAX_PASSWORD, min_len=1)
    new = validate.string(params, "new_pwd", accounts.MAX_PASSWORD, min_len=1)
    with runtime.db.transaction() as cur:
        auth = accounts_store.get_auth(cur, caller.uid)
    if auth is None or not verify_password(old, auth[0]):
        log.info("password change refused uid=%s addr=%s", caller.uid, caller.addr)
        raise ImError("auth_failed", "old_pwd: wrong password", 403)
    accounts.set_password(caller.uid, new, keep_token=caller.token_hash)
    log.info("password changed uid=%s addr=%s", caller.uid, caller.addr)
    return shapes.text("1")
