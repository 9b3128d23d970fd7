"""Group commit for the event loop: concurrent callers' work done in one go.

`Batcher` runs `flush(items)` in one greenlet on everything queued since its previous run:
the chat and receipt writers store a batch per transaction. `Lookup` does the same for reads:
concurrent callers' keys go to the database in one query (token checks and the login re-send
read during a reconnect storm, version polls), each caller waiting for its own answer.
"""

import logging
from collections.abc import Callable, Hashable

import gevent
from gevent.event import AsyncResult, Event

from im import runtime
from im.errors import Unavailable

log = logging.getLogger("im.batcher")


class Batcher:
    """One greenlet running `flush(items)` on everything queued since its previous run."""

    def __init__(self, name: str, flush: Callable[[list], None], max_batch: int,
                 pause: float = 0.0):
        """`pause`: seconds to wait after each flush, for work that nobody waits on: fewer,
        larger batches (a statement's fixed cost dominates small ones)."""
        self.name = name
        self.flush = flush
        self.max_batch = max_batch
        self.pause = pause
        self._items: list = []
        self._wake = Event()
        self._idle = Event()
        self._idle.set()
        self._greenlet = None
        self.closed = False

    def submit(self, item) -> None:
        if self.closed:
            raise Unavailable("shutting down")
        self._items.append(item)
        self._idle.clear()
        self._wake.set()
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._items:
                batch = self._items[:self.max_batch]
                del self._items[:self.max_batch]
                try:
                    self.flush(batch)
                except Exception:
                    log.exception("%s writer failed on a batch of %d", self.name, len(batch))
                if self.pause and not self.closed:
                    gevent.sleep(self.pause)
            self._idle.set()

    def drain(self, timeout: float) -> None:
        """Refuse new items and wait until the queued ones are written."""
        self.closed = True
        if not self._idle.wait(timeout):
            log.warning("%s writer: %d items not written at shutdown", self.name, len(self._items))


class Lookup:
    """`get(key)` answered by `fetch(keys) -> {key: value}`, one call for the keys of every
    caller waiting meanwhile (a missing key is None); an error of `fetch` reaches each caller."""

    def __init__(self, name: str, fetch: Callable[[list], dict], max_batch: int = 500):
        self.fetch = fetch
        self._batcher = Batcher(name, self._flush, max_batch)

    def get(self, key: Hashable):
        answer = AsyncResult()
        self._batcher.submit((key, answer))
        return answer.get()

    def _flush(self, items: list[tuple[Hashable, AsyncResult]]) -> None:
        try:
            found = self.fetch(list({key for key, _ in items}))
        except Exception as err:  # the callers raise it
            self._fail(items, err)
            return
        except BaseException:  # this greenlet is killed (shutdown): nobody waits forever
            self._fail(items, Unavailable("shutting down"))
            raise
        for key, answer in items:
            answer.set(found.get(key))

    @staticmethod
    def _fail(items: list[tuple[Hashable, AsyncResult]], err: Exception) -> None:
        for _, answer in items:
            answer.set_exception(err)


def database_lookup(name: str, read: Callable[[object, list], dict]) -> Lookup:
    """A Lookup whose fetch is `read(cursor, keys)`: one lone read (autocommit, no BEGIN and
    COMMIT round trips) on a pooled connection per batch."""
    def fetch(keys: list) -> dict:
        with runtime.db.autocommit() as cur:
            return read(cur, keys)
    return Lookup(name, fetch)
