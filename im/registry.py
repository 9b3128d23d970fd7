"""Where features register what they handle; transports look handlers up here.

- `tcp_handler(msgtype)`: `fn(conn, body) -> dict | None`. A dict is merged into a success ACK;
  None sends nothing (the handler answered itself, or the frame takes no ACK). With
  `inline=pred`, a frame for which `pred(conn, body)` is true is handled straight from the
  read callback, in the hub: the handler must then neither block nor wait.
- `qid(name)`: `fn(caller, params) -> dict`, the HTTP API's `{"type", "result", ...}`.
- `on_event(op)`: `fn(event)`, cross-process events delivered by the router (kicks,
  cache invalidations, deliveries published by HTTP workers).
- `on_disconnect(fn)`: `fn(conn)` after a logged-in connection closes, however it closed.
- `on_login(fn)`: `fn(conn)` after a successful IM_LOGIN.
"""

from dataclasses import dataclass
from collections.abc import Callable


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls a QID: the user, the hash of the token used, and the source address."""
    uid: str
    token_hash: bytes
    addr: str


TCP_HANDLERS: dict[int, tuple[Callable, bool]] = {}
TCP_INLINE: dict[int, Callable] = {}  # msgtype → pred(conn, body): the handler will not block
QIDS: dict[str, Callable] = {}
EVENTS: dict[str, list[Callable]] = {}
DISCONNECT_HOOKS: list[Callable] = []
LOGIN_HOOKS: list[Callable] = []


def tcp_handler(msgtype: int, auth: bool = True, inline: Callable | None = None) -> Callable:
    def register(fn: Callable) -> Callable:
        TCP_HANDLERS[msgtype] = (fn, auth)
        if inline is not None:
            TCP_INLINE[msgtype] = inline
        return fn
    return register


def never_waits(conn, body: dict) -> bool:
    """The `inline` predicate of a handler that cannot block for any frame."""
    return True


def qid(name: str) -> Callable:
    def register(fn: Callable) -> Callable:
        QIDS[name] = fn
        return fn
    return register


def on_event(op: str) -> Callable:
    def register(fn: Callable) -> Callable:
        EVENTS.setdefault(op, []).append(fn)
        return fn
    return register


def on_disconnect(fn: Callable) -> Callable:
    DISCONNECT_HOOKS.append(fn)
    return fn


def on_login(fn: Callable) -> Callable:
    LOGIN_HOOKS.append(fn)
    return fn


def load_features() -> None:
    """Import every feature module so that its handlers register themselves."""
    import importlib
    import pkgutil

    import im.features
    for mod in pkgutil.iter_modules(im.features.__path__):
        importlib.import_module(f"im.features.{mod.name}")
