"""im/batcher.py Lookup: concurrent callers share one fetch, each gets its own answer, and no
caller waits forever when the fetch fails or its greenlet is killed. Batcher: a pause after
each flush gathers what arrives meanwhile, and a drain writes what is queued."""

import gevent
import pytest

from im.batcher import Batcher, Lookup
from im.errors import Unavailable


def test_callers_waiting_together_share_one_fetch():
    calls = []

    def fetch(keys):
        calls.append(sorted(keys))
        gevent.sleep(0.01)  # a round trip: the callers arriving meanwhile form the next batch
        return {k: k.upper() for k in keys if k != "none"}

    lookup = Lookup("test", fetch)
    first = [gevent.spawn(lookup.get, k) for k in ("a", "b", "a", "none")]
    gevent.sleep(0.001)  # the first batch is in flight
    second = [gevent.spawn(lookup.get, k) for k in ("c", "a")]
    gevent.joinall(first + second, raise_error=True)
    assert [g.value for g in first + second] == ["A", "B", "A", None, "C", "A"]
    assert calls == [["a", "b", "none"], ["a", "c"]]


def test_a_failed_fetch_reaches_every_caller():
    def fetch(keys):
        raise Unavailable("database unavailable")

    lookup = Lookup("test", fetch)
    callers = [gevent.spawn(lookup.get, k) for k in ("a", "b")]
    gevent.joinall(callers)
    assert all(isinstance(g.exception, Unavailable) for g in callers)


def test_callers_are_released_when_the_fetch_is_killed():
    lookup = Lookup("test", lambda keys: gevent.sleep(10))
    caller = gevent.spawn(lookup.get, "a")
    gevent.sleep(0.01)
    lookup._batcher._greenlet.kill()
    with pytest.raises(Unavailable):
        caller.get(timeout=1)


@pytest.mark.parametrize("pause, batches", [(0.0, [[1], [2], [3], [4]]), (0.5, [[1], [2, 3, 4]])])
def test_a_pause_after_each_flush_gathers_what_arrives_meanwhile(pause, batches):
    flushed = []
    writer = Batcher("test", flushed.append, 100, pause=pause)
    for item in (1, 2, 3, 4):
        writer.submit(item)
        gevent.sleep(0.02)
    writer.drain(timeout=2)
    assert flushed == batches
