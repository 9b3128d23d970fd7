"""Session tokens checked once per process, then trusted from memory.

Every HTTP request and token login presents a token; looking it up costs a round trip to
PostgreSQL. An entry (uid, disabled, expires_at) is kept for at most `token_cache_s` seconds
and never past the token's own expiry. Every revocation the server performs reaches every
process at once through the router's event path: `revoked()` after a logout, and the `kick`
event that follows a password change or a disabled account. Only a direct SQL edit of im_token
waits out `token_cache_s`. A generation counter keeps a lookup that raced with an invalidation
from caching what it read before the revocation. Lookups made meanwhile (a reconnect storm)
share one query (im/batcher.py `Lookup`).
"""

import time

from im import runtime
from im.batcher import database_lookup
from im.registry import on_event
from im.store import accounts as store

MAX_ENTRIES = 100_000

# token hash -> (uid, disabled, expires_at as epoch seconds, trusted until (monotonic))
_entries: dict[bytes, tuple[str, bool, float, float]] = {}
_generation = 0


def owner(digest: bytes) -> tuple[str, bool] | None:
    """(uid, disabled) of a live token, else None."""
    entry = _entries.get(digest)
    if entry is not None:
        if time.time() < entry[2] and time.monotonic() < entry[3]:
            return entry[0], entry[1]
        _entries.pop(digest, None)
    generation = _generation
    row = _owners.get(digest)
    if row is None:
        return None
    uid, disabled, expires_at = row
    trust = runtime.cfg.token_cache_s
    if trust > 0 and generation == _generation:
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()
        _entries[digest] = (uid, disabled, expires_at.timestamp(), time.monotonic() + trust)
    return uid, disabled


_owners = database_lookup("tokens", store.token_owners)  # a login storm's checks share their queries


def revoked(digest: bytes) -> None:
    """Call after committing the revocation of one token."""
    runtime.router.emit("token_revoked", token=digest.hex())


@on_event("token_revoked")
def _forget_token(event: dict) -> None:
    global _generation
    _generation += 1
    try:
        _entries.pop(bytes.fromhex(event.get("token", "")), None)
    except ValueError:
        pass


@on_event("kick")
def _forget_user(event: dict) -> None:
    """A kick follows every revocation of a user's tokens (password change, disabled account):
    forget that user's tokens but the one kept."""
    global _generation
    _generation += 1
    uid, keep = event.get("uid"), event.get("keep") or ""
    for digest in [d for d, e in _entries.items() if e[0] == uid and d.hex() != keep]:
        _entries.pop(digest, None)
