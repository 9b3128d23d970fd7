"""Stored chat over HTTP (PROTOCOL.md §2.3, §6.12): offline fetches, receipts and history.

Every fetch records the highest position it handed out (`given_seq`, per mailbox and per
group member); a receipt never marks past it, so a message stored after the fetch that the
client has not seen is never marked received or synced.
"""

from datetime import datetime, timedelta

import orjson

from im import runtime, shapes, timefmt, validate
from im.errors import ImError, bad_request
from im.registry import Caller, qid
from im.store import history as store

OFFLINE_LIMIT = (500, 5000)    # (default, max) rows per offline fetch
HISTORY_LIMIT = (100, 1000)
DEFAULT_DAYS = 14
MAX_DAYS = 36500
NO_BOUND = 2 ** 63 - 1         # before_seq when absent
MAX_GID = 50


def _limit(params: dict, bounds: tuple[int, int]) -> int:
    return validate.integer(params, "limit", default=bounds[0], lo=1, hi=bounds[1])


def _given(params: dict, field: str) -> bool:
    return params.get(field) not in (None, "")


def _time(params: dict) -> tuple[datetime, datetime]:
    """(start of the next second after `time`, `time`): "at or before time" at second precision."""
    value = validate.string(params, "time", 30, min_len=1)
    try:
        mark = timefmt.parse(value)
    except ValueError:
        raise bad_request("time", "must be YYYY-MM-DD HH:MM:SS") from None
    return mark + timedelta(seconds=1), mark


def _in_order(rows: list, limit: int, newest_first: bool) -> tuple[list, bool]:
    """(the page in stream order, whether there are more) of rows fetched with limit + 1."""
    page, more = shapes.page(rows, limit)
    if newest_first:
        page.reverse()
    return page, more


def _json_page(rows: list[str], limit: int, newest_first: bool = False) -> dict:
    """A table page of rows PostgreSQL wrote as JSON text (store.history), spliced as is."""
    page, more = _in_order(rows, limit, newest_first)
    return {"type": "table", "result": orjson.Fragment(f"[{','.join(page)}]"), "more": "1" if more else "0"}


# --- 1:1 ------------------------------------------------------------------------------

@qid("QID_IM_GET_OFFLINE_MSG")
def get_offline_msg(caller: Caller, params: dict) -> dict:
    limit = _limit(params, OFFLINE_LIMIT)
    after = validate.integer(params, "after_seq", lo=0) if _given(params, "after_seq") else None
    with runtime.db.autocommit() as cur:  # one statement reads the page and records it given
        if after is None:
            rows = store.unreceived(cur, caller.uid, limit, timefmt.zone_name())
        else:
            rows = store.mailbox_after(cur, caller.uid, after, limit, timefmt.zone_name())
    return _json_page(rows, limit)


@qid("QID_IM_RECIVE_OFFLINE_MSG")
def recive_offline_msg(caller: Caller, params: dict) -> dict:
    if not (_given(params, "seq") or _given(params, "time")):
        raise bad_request("seq", "required (or time)")
    with runtime.db.transaction() as cur:
        if _given(params, "seq"):
            store.mark_received_upto(cur, caller.uid, validate.integer(params, "seq", lo=0))
        else:
            store.mark_received_before(cur, caller.uid, _time(params)[0])
    return shapes.text("1")


@qid("QID_IM_GET_ROSTER_MSG_HISTORY")
def get_roster_msg_history(caller: Caller, params: dict) -> dict:
    other = validate.uid(params.get("msgto"), "msgto")
    days = validate.integer(params, "days", default=DEFAULT_DAYS, lo=1, hi=MAX_DAYS)
    before = validate.integer(params, "before_seq", default=NO_BOUND, lo=0)
    limit = _limit(params, HISTORY_LIMIT)
    with runtime.db.autocommit() as cur:  # one statement: no BEGIN and COMMIT round trips
        rows = store.conversation(cur, caller.uid, other, before, days, limit + 1, timefmt.zone_name())
    return _json_page(rows, limit, newest_first=True)


# --- groups ---------------------------------------------------------------------------

def _gid(params: dict) -> str:
    return validate.string(params, "gid", MAX_GID, min_len=1)


def _check_member(cur, gid: str, uid: str) -> None:
    member = store.membership(cur, gid, uid)
    if member is None:
        raise ImError("no_such_group", f"no group {gid}")
    if not member:
        raise ImError("not_member", f"not a member of group {gid}")


@qid("QID_IM_GET_GROUP_OFFLINE_MSG")
def get_group_offline_msg(caller: Caller, params: dict) -> dict:
    gid = _gid(params) if _given(params, "gid") else None
    limit = _limit(params, OFFLINE_LIMIT)
    with runtime.db.autocommit() as cur:  # one statement reads the page and records it given
        rows = store.group_unsynced(cur, caller.uid, gid, limit, timefmt.zone_name())
        if gid is not None and not rows:
            _check_member(cur, gid, caller.uid)
    return _json_page(rows, limit)


@qid("QID_IM_RECIVE_GROUP_OFFLINE_MSG")
def recive_group_offline_msg(caller: Caller, params: dict) -> dict:
    if _given(params, "seq"):
        gid, seq = _gid(params), validate.integer(params, "seq", lo=0)
        with runtime.db.transaction() as cur:
            _check_member(cur, gid, caller.uid)
            store.group_mark_seq(cur, caller.uid, gid, seq)
    elif _given(params, "time"):
        gid = _gid(params) if _given(params, "gid") else None
        before, mark = _time(params)
        with runtime.db.transaction() as cur:
            if gid is not None:
                _check_member(cur, gid, caller.uid)
            store.group_mark_before(cur, caller.uid, before, mark, gid)
    else:
        raise bad_request("seq", "required (or time)")
    return shapes.text("1")


@qid("QID_IM_GET_GROUP_MSG_HISTORY")
def get_group_msg_history(caller: Caller, params: dict) -> dict:
    gid = _gid(params)
    days = validate.integer(params, "days", default=DEFAULT_DAYS, lo=1, hi=MAX_DAYS)
    before = validate.integer(params, "before_seq", default=NO_BOUND, lo=0)
    limit = _limit(params, HISTORY_LIMIT)
    with runtime.db.autocommit() as cur:  # one statement; membership looked at only if no rows
        rows = store.group_history(cur, caller.uid, gid, before, days, limit + 1, timefmt.zone_name())
        if not rows:
            _check_member(cur, gid, caller.uid)
    return _json_page(rows, limit, newest_first=True)
