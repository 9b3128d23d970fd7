"""Cached lookups for the hot path: who is whose friend, who is in which group, who exists.

A chat message must not cost a query per check, so these answers are cached per process.
Whoever changes friendships or memberships calls `friends_changed` / `group_changed` after the
commit; the invalidation reaches every process through the router's event path. A generation
counter keeps a lookup that raced with an invalidation from caching the stale answer.
"""

from collections import defaultdict

from im import runtime
from im.registry import on_event
from im.store import membership as store

MAX_ENTRIES = 200_000

_friends: dict[str, frozenset] = {}
_members: dict[str, tuple | None] = {}
_users: set[str] = set()
_generation: defaultdict = defaultdict(int)


def _cached(cache: dict, key: str, load):
    if key in cache:
        return cache[key]
    gen = _generation[key]
    with runtime.db.transaction() as cur:
        value = load(cur, key)
    if _generation[key] == gen:
        if len(cache) >= MAX_ENTRIES:
            cache.clear()
        cache[key] = value
    return value


def _group_key(gid: str) -> str:
    """Groups share the generation counter with users: their keys are prefixed."""
    return "g:" + gid


def friends(uid: str) -> frozenset:
    return _cached(_friends, uid, lambda cur, k: frozenset(store.friend_uids(cur, k)))


def are_friends(a: str, b: str) -> bool:
    return b in friends(a)


def members(gid: str) -> tuple | None:
    """Member uids of a live group in join order; None if there is no such group."""
    value = _cached(_members, _group_key(gid),
                    lambda cur, k: _tuple_or_none(store.member_uids(cur, k[2:])))
    return value


def _tuple_or_none(value: list | None) -> tuple | None:
    return tuple(value) if value is not None else None


def is_member(gid: str, uid: str) -> bool:
    found = members(gid)
    return found is not None and uid in found


def user_exists(uid: str) -> bool:
    """Users are never deleted (only disabled), so a positive answer is cached forever."""
    if uid in _users:
        return True
    with runtime.db.transaction() as cur:
        exists = store.user_exists(cur, uid)
    if exists:
        if len(_users) >= MAX_ENTRIES:
            _users.clear()
        _users.add(uid)
    return exists


def cached(sender: str, to: str, group: bool) -> bool:
    """Would `check_recipient`'s lookups for `sender` writing to `to` be answered from the
    caches, without a query?"""
    if group:
        return _group_key(to) in _members
    return to in _users and (not runtime.cfg.require_friendship or sender in _friends)


def friends_changed(*uids: str) -> None:
    """Call after committing a change to these users' friend lists."""
    runtime.router.emit("friends_changed", uids=list(uids))


def group_changed(gid: str) -> None:
    """Call after committing a change to a group's members or its existence."""
    runtime.router.emit("group_changed", gid=gid)


@on_event("friends_changed")
def _drop_friends(event: dict) -> None:
    for uid in event.get("uids", ()):
        _generation[uid] += 1
        _friends.pop(uid, None)


@on_event("group_changed")
def _drop_group(event: dict) -> None:
    key = _group_key(str(event.get("gid", "")))
    _generation[key] += 1
    _members.pop(key, None)


@on_event("resync")
def _drop_all(event: dict) -> None:
    """The router may have missed invalidations (a Redis outage in cluster mode)."""
    for key in list(_friends) + list(_members):
        _generation[key] += 1
    _friends.clear()
    _members.clear()
