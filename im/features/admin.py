"""Back-office actions behind the admin API and the `im user` command (PROTOCOL.md §4)."""

from im import runtime, shapes, validate
from im.errors import ImError
from im.features import accounts
from im.store import accounts as store

PATCHABLE = {"name", "deptid", "pwd", "disabled"} | set(validate.PROFILE_FIELDS)
LIMITS = {"name": 50, "deptid": 50}


def create_user(params: dict) -> None:
    if not accounts.create_user(params.get("uid"), params.get("pwd"), params):
        raise ImError("already_exists", f"user {params.get('uid')} exists", 409)


def create_users(users: list) -> tuple[int, int]:
    return accounts.create_users(users)


def get_user(uid: str) -> dict:
    with runtime.db.transaction() as cur:
        user = store.get_user(cur, uid)
    if user is None:
        raise ImError("not_found", f"no user {uid}")
    out = {k: shapes.as_str(v) for k, v in user.items()}
    out["disabled"] = bool(user["disabled"])
    return out


def patch_user(uid: str, params: dict) -> None:
    unknown = set(params) - PATCHABLE
    if unknown:
        raise ImError("bad_request", f"{sorted(unknown)[0]}: not a user field")
    fields = validate.profile(params)
    for key, limit in LIMITS.items():
        if key in params:
            fields[key] = validate.string(params, key, limit)
    disabled = params.get("disabled")
    if disabled is not None:
        if not isinstance(disabled, bool):
            raise ImError("bad_request", "disabled: must be true or false")
        fields["disabled"] = disabled
    pwd = validate.string(params, "pwd", accounts.MAX_PASSWORD, required=False, min_len=1) \
        if "pwd" in params else None
    with runtime.db.transaction() as cur:
        ver = store.bump_contacts_version(cur) if set(fields) & store.DIRECTORY_FIELDS else None
        if not store.update_user(cur, uid, fields, ver):
            raise ImError("not_found", f"no user {uid}")
        if disabled:
            store.revoke_user_tokens(cur, uid)
    if pwd is not None:
        accounts.set_password(uid, pwd, keep_token=None)
    if disabled:
        accounts.kick_user(uid, "disabled")


def list_users(limit: int = 100000) -> list[tuple]:
    with runtime.db.transaction() as cur:
        return store.list_users(cur, limit)
