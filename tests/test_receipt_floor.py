"""Receipts move a per-mailbox floor (im_received) below which nothing is unreceived; the
offline fetch starts after it. These scenarios check that the floor never hides a message."""

import time

from im import protocol
from im.client import rows
from test_roster_qids import api

MSG, ACK = protocol.IM_MESSAGE, protocol.IM_MESSAGE_ACK


def eventually(server, query: str, args: tuple, expected) -> object:
    deadline = time.monotonic() + 5
    while (got := server.sql(query, args)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def offline_bodies(http) -> list[str]:
    return [r["body"] for r in rows(http.qid("QID_IM_GET_OFFLINE_MSG"))]


def test_a_message_receipted_by_msgid_above_the_floor_and_one_never_given(server, make_users,
                                                                          connect):
    jack, rose = make_users(2)
    jack_pc, rose_pc = connect(jack), connect(rose)
    for n in (1, 2, 3):
        jack_pc.message(rose, f"m{n}", msgid=f"m{n}")
        assert rose_pc.wait(MSG)[1]["seq"] == n
    jack_pc.message(rose, "m4", msgid="m4", to_res="elsewhere")  # stored, never given to rose
    rose_pc.send(ACK, {"type": 196609, "upto": 2})
    rose_pc.send(ACK, {"type": 196609, "msgid": "m3"})  # without `from`: above the floor
    query = "SELECT msgid, received FROM tp_im_message WHERE msgto = %s ORDER BY to_seq"
    expected = [("m1", 1), ("m2", 1), ("m3", 1), ("m4", 0)]
    assert eventually(server, query, (rose,), expected) == expected
    assert server.sql("SELECT received_seq FROM im_received WHERE uid = %s", (rose,)) == [(2,)]

    # rose's other device fetches what is left, is given m4, and marks everything up to it
    http = api(server, rose)
    assert offline_bodies(http) == ["m4"]
    rose_pc.send(ACK, {"type": 196609, "upto": 99})
    expected = expected[:3] + [("m4", 1)]
    assert eventually(server, query, (rose,), expected) == expected
    assert offline_bodies(http) == []
    jack_pc.message(rose, "m5", msgid="m5")
    assert rose_pc.wait(MSG)[1]["seq"] == 5
    assert offline_bodies(http) == ["m5"]
