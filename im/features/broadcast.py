"""The admin broadcast (PROTOCOL.md §4, §6.18): one 1:1 message from `system` per target,
stored like any chat message, so offline users fetch it from their mailbox.

The process answering the admin call (maybe an HTTP-only gunicorn worker, which holds no TCP
session) only stores the messages, then emits a `broadcast` event carrying ids only: the sender,
the broadcast's msgid prefix and the sender's range of positions. Every process (this one
included, through `emit`) loads the broadcast's messages to its own logged-in users and
delivers them, so each connection gets each message exactly once whichever process stored it.
"""

import logging
import secrets

from im import runtime
from im.errors import ImError, bad_request
from im.features import chat
from im.registry import on_event
from im.store import accounts as accounts_store
from im.store import broadcast as broadcast_store
from im.store import org as store

log = logging.getLogger("im.broadcast")

SENDER = "system"
MAX_TARGETS = 100_000


def broadcast(to, body) -> dict:
    """Store one message per target and have every process deliver them live.

    Returns {"stored", "delivered", "unknown"}: `delivered` counts the stored targets that
    this process's router saw online when they were stored — exact in `im serve` and in
    cluster mode (the Redis registry knows every node's sessions); an HTTP-only process beside
    one `im tcp` without Redis sees no session and reports 0, while the delivery still happens.
    """
    targets = _targets(to)
    if not isinstance(body, str) or not body:
        raise bad_request("body", "required string")
    with runtime.db.transaction() as cur:
        known = accounts_store.existing_uids(cur, targets)
    unknown = [uid for uid in targets if uid not in known]
    recipients = [uid for uid in targets if uid in known]
    prefix = f"bc{secrets.token_hex(8)}"
    outcomes = chat.send_many(SENDER, "", body,
                              [(uid, f"{prefix}{n:x}") for n, uid in enumerate(recipients)],
                              live=False)
    stored = [(uid, o[0]) for uid, o in zip(recipients, outcomes) if not isinstance(o, ImError)]
    if stored:
        seqs = [seq for _, seq in stored]
        runtime.router.emit("broadcast", sender=SENDER, prefix=prefix, lo=min(seqs), hi=max(seqs))
    for outcome in outcomes:
        if isinstance(outcome, ImError) and outcome.code != "no_such_user":
            raise outcome  # e.g. unavailable: some batches may be stored, retrying sends again
    unknown += [uid for uid, o in zip(recipients, outcomes) if isinstance(o, ImError)]
    delivered = sum(1 for uid, _ in stored if runtime.router.is_online(uid))
    result = {"stored": len(stored), "delivered": delivered, "unknown": unknown}
    log.info("broadcast %s: stored %d, delivered %d, unknown %d", prefix, result["stored"],
             delivered, len(unknown))
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


@on_event("broadcast")
def deliver_here(event: dict) -> None:
    """Deliver a stored broadcast to this process's own logged-in recipients."""
    router = runtime.router
    online = list({conn.uid for conn in router.all_connections()})
    if not online:
        return
    with runtime.db.transaction() as cur:
        messages = broadcast_store.messages_to(cur, event["sender"], event["prefix"],
                                               int(event["lo"]), int(event["hi"]), online)
        if messages:  # given before sent: a receipt for it must not be clamped (§6.12)
            broadcast_store.advance_given(cur, {m["msgto"]: m["to_seq"] for m in messages})
    reached = sum(router.deliver(m["msgto"], chat.recipient_frame(m)) > 0 for m in messages)
    log.info("broadcast %s: delivered to %d users here", event["prefix"], reached)
