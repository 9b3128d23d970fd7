"""The user's roster over HTTP (PROTOCOL.md §2.2): friends, friend groups, sign, avatar, remarks.

The group list is a JSON string the client owns (`[{"gid","n","w","def"}]`); the server checks
its shape so that every friend always sits in an existing group.
"""

import json
import logging

from im import runtime, shapes, validate
from im.errors import ImError, bad_request
from im.registry import Caller, qid
from im.store import accounts as accounts_store
from im.store import roster as store

log = logging.getLogger("im.roster")

MAX_GRP_CHARS = 4000      # tp_im_roster.grp is varchar(4000)
MAX_GROUPS = 100
MAX_GID = 50              # tp_im_roster_frd.gid is varchar(50)
MAX_GROUP_NAME = 50
MAX_SIGN = 500
MAX_AVATAR = 500
MAX_REMARK = 50
BOOLS = {True: True, False: False, "1": True, "0": False, "true": True, "false": False}  # and 1, 0 (== True, False)


def dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@qid("QID_IM_GET_ROSTER_ALL")
def get_roster_all(caller: Caller, params: dict) -> dict:
    with runtime.db.transaction() as cur:
        header = store.get_header(cur, caller.uid) or ("[]", "", "")
        friends = store.friends(cur, caller.uid)
    grp, sign, avatar = header
    listing = [{k: shapes.as_str(v) for k, v in f.items()} for f in friends]
    return shapes.text(dumps(listing), ext={"avatar": avatar, "grp": grp, "sign": sign})


def _group(item, i: int) -> dict:
    where = f"grp[{i}]"
    if not isinstance(item, dict):
        raise bad_request("grp", f"{where} must be an object")
    try:
        gid = validate.string(item, "gid", MAX_GID, min_len=1)
        name = validate.string(item, "n", MAX_GROUP_NAME, required=False)
        weight = validate.integer(item, "w", default=0)
    except ImError as err:
        raise bad_request("grp", f"{where}.{err.text}") from None
    default = item.get("def", False)
    if not isinstance(default, (bool, int, str)) or default not in BOOLS:
        raise bad_request("grp", f"{where}.def must be true or false")
    return {"gid": gid, "n": name, "w": weight, "def": BOOLS[default]}


def parse_groups(raw) -> list[dict]:
    """The normalised group list of a `grp` parameter; 400 `grp` when it is not valid."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise bad_request("grp", "not valid JSON") from None
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_GROUPS:
        raise bad_request("grp", f"must be a list of 1 to {MAX_GROUPS} groups")
    groups = [_group(item, i) for i, item in enumerate(raw)]
    if sum(g["def"] for g in groups) != 1:
        raise bad_request("grp", "exactly one group must have def true")
    if len({g["gid"] for g in groups}) != len(groups):
        raise bad_request("grp", "gids must be unique")
    return groups


@qid("QID_IM_SET_ROSTER_GRP")
def set_roster_grp(caller: Caller, params: dict) -> dict:
    if params.get("grp") is None:
        raise bad_request("grp", "required")
    groups = parse_groups(params["grp"])
    text = dumps(groups)
    if len(text) > MAX_GRP_CHARS:
        raise bad_request("grp", f"longer than {MAX_GRP_CHARS} characters")
    default_gid = next(g["gid"] for g in groups if g["def"])
    with runtime.db.transaction() as cur:
        store.set_grp(cur, caller.uid, text, [g["gid"] for g in groups], default_gid)
    log.info("roster groups set uid=%s groups=%d", caller.uid, len(groups))
    return shapes.text("1")


def _set_header(caller: Caller, params: dict, field: str, limit: int) -> dict:
    value = validate.string(params, field, limit)
    with runtime.db.transaction() as cur:
        ver = accounts_store.bump_contacts_version(cur)
        store.set_header_field(cur, caller.uid, field, value, ver)
    log.info("roster %s set uid=%s ver=%d", field, caller.uid, ver)
    return shapes.text("1")


@qid("QID_IM_SET_ROSTER_SIGN")
def set_roster_sign(caller: Caller, params: dict) -> dict:
    return _set_header(caller, params, "sign", MAX_SIGN)


@qid("QID_IM_SET_ROSTER_AVATAR")
def set_roster_avatar(caller: Caller, params: dict) -> dict:
    return _set_header(caller, params, "avatar", MAX_AVATAR)


def _group_ids(grp: str | None) -> set[str]:
    try:
        return {str(g.get("gid")) for g in json.loads(grp or "[]") if isinstance(g, dict)}
    except (ValueError, TypeError, AttributeError):
        return set()


@qid("QID_IM_SET_ROSTER_FRD_GID")
def set_roster_frd_gid(caller: Caller, params: dict) -> dict:
    fid = validate.uid(params.get("fid"), "fid")
    gid = validate.string(params, "gid", MAX_GID, min_len=1)
    with runtime.db.transaction() as cur:
        if gid not in _group_ids(store.get_grp_for_update(cur, caller.uid)):
            raise bad_request("gid", "not one of your groups")
        if not store.set_friend_field(cur, caller.uid, fid, "gid", gid):
            raise ImError("not_found", f"{fid} is not your friend")
    return shapes.text("1")


@qid("QID_IM_SET_ROSTER_FRD_NAME")
def set_roster_frd_name(caller: Caller, params: dict) -> dict:
    fid = validate.uid(params.get("fid"), "fid")
    name = validate.string(params, "name", MAX_REMARK)
    with runtime.db.transaction() as cur:
        if not store.set_friend_field(cur, caller.uid, fid, "fname", name):
            raise ImError("not_found", f"{fid} is not your friend")
    return shapes.text("1")
