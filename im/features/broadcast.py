"""The admin broadcast (PROTOCOL.md §4, §6.18): one 1:1 message from `system` per target,
stored like any chat message (offline users fetch it from their mailbox) and delivered live
by the chat writer."""

import logging
import secrets

from im import runtime
from im.errors import ImError, bad_request
from im.features import chat
from im.store import accounts as accounts_store
from im.store import org as store

log = logging.getLogger("im.broadcast")

SENDER = "system"
MAX_TARGETS = 100_000


def broadcast(to, body) -> dict:
    """{"stored", "delivered" (users reached online), "unknown" (targets not stored)}."""
    targets = _targets(to)
    if not isinstance(body, str) or not body:
        raise bad_request("body", "required string")
    with runtime.db.transaction() as cur:
        known = accounts_store.existing_uids(cur, targets)
    unknown = [uid for uid in targets if uid not in known]
    recipients = [uid for uid in targets if uid in known]
    tag = secrets.token_hex(8)
    outcomes = chat.send_many(SENDER, "", body,
                              [(uid, f"bc{tag}{n:x}") for n, uid in enumerate(recipients)])
    for outcome in outcomes:
        if isinstance(outcome, ImError) and outcome.code != "no_such_user":
            raise outcome  # e.g. unavailable: some batches may be stored, retrying sends again
    unknown += [uid for uid, o in zip(recipients, outcomes) if isinstance(o, ImError)]
    done = [o for o in outcomes if not isinstance(o, ImError)]
    result = {"stored": len(done), "delivered": sum(1 for o in done if o[2] > 0), "unknown": unknown}
    log.info("broadcast %s: stored %d, delivered %d, unknown %d", tag, result["stored"],
             result["delivered"], len(unknown))
    return result


def _targets(to) -> list[str]:
    if to == "*":
        with runtime.db.transaction() as cur:
            return store.enabled_uids(cur)
    if not isinstance(to, list) or not all(isinstance(uid, str) for uid in to):
        raise bad_request("to", 'a list of user ids or "*"')
    if len(to) > MAX_TARGETS:
        raise ImError("too_large", f"to: at most {MAX_TARGETS} users", 413)
    return list(dict.fromkeys(to))
