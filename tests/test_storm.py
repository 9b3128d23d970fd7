"""A login storm with the real password cost (kdf_cost 14): while 100 clients log in at once,
another connection's heartbeats keep being answered promptly, because password hashing runs
in low-priority worker threads and never blocks the event loop (PROTOCOL.md §1.5).

A login costs what the stored hash says, so the users are created cheaply and then given a
password hash of the default cost 14: the storm is real, its setup is quick.
"""

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from im.config import Config
from im.passwords import hash_password

PW = "pw"
USERS = 100


def heartbeat_times(client, stop: threading.Event) -> list[float]:
    """Round-trip times of heartbeats sent one after another until `stop` is set."""
    times = []
    while not stop.is_set():
        started = time.monotonic()
        client.heartbeat(timeout=10)
        times.append(time.monotonic() - started)
        time.sleep(0.01)
    return times


def test_heartbeats_stay_fast_during_a_login_storm(make_server, make_users):
    srv = make_server()
    uids = make_users(USERS, srv=srv)
    cost = Config().kdf_cost
    assert cost == 14
    srv.sql("UPDATE im_user SET pwd_hash = %s WHERE uid = ANY(%s)", (hash_password(PW, cost), uids))
    watcher = srv.client()
    watcher.login(uids[0], PW, res="watch")
    clients = [srv.client(timeout=60) for _ in range(USERS)]

    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as beat_pool:
        beats = beat_pool.submit(heartbeat_times, watcher, stop)
        time.sleep(0.2)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=USERS) as storm:
            tokens = list(storm.map(lambda pair: pair[1].login(pair[0], PW, res="storm", timeout=60)["token"],
                                    zip(uids, clients)))
        storm_s = time.monotonic() - started
        stop.set()
        rtts = beats.result()

    assert len(set(tokens)) == USERS
    during = rtts[:-1] or rtts
    median, worst = statistics.median(during), max(during)
    print(f"storm of {USERS} logins: {storm_s:.2f}s; {len(during)} heartbeats, "
          f"median {median * 1000:.1f} ms, max {worst * 1000:.1f} ms")
    assert storm_s > 0.5, "the storm was too short to measure anything"
    assert len(during) >= 10
    # The target is 100 ms per heartbeat. Measured on two shared cores: median 1-2 ms, max
    # 110-220 ms (an unlucky scheduling slice of a busy machine, not the event loop waiting for
    # a hash). Hashing at the loop's priority gave a median of 36 ms, blocking it far more; so
    # the median is held well under the target and the maximum gets head room for noisy
    # neighbours (other test runs share this machine).
    assert median < 0.025
    assert worst < 1.0
    for client in clients:
        client.close()
