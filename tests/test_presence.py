"""Presence between friends (PROTOCOL.md §1.8): only announced connections of friends take part."""

import pytest

from im import protocol
from im.client import Client, RequestFailed
from test_friends import befriend

PRESENCE = protocol.IM_PRESENCE


def announce(conn: Client, show: str = "online") -> dict:
    return conn.request(PRESENCE, {"type": "online", "show": show})


def presence_from(conn: Client, sender: Client, **fields) -> dict:
    """The next presence frame `conn` receives from that sender connection."""
    return conn.wait(PRESENCE, **{"from": sender.uid, "from_res": sender.res, **fields})[1]


def expect(conn: Client, sender: Client, kind: str, show: str) -> None:
    frame = presence_from(conn, sender)
    assert frame == {"type": kind, "from": sender.uid, "from_res": sender.res, "to": conn.uid,
                     "to_res": conn.res, "show": show}


@pytest.fixture
def friends(make_users, connect):
    """jack@pc, jack@android, rose@pc, rose@iphone — jack and rose are friends; tom is not."""
    jack, rose, tom = make_users(3)
    conns = {"jack_pc": connect(jack, res="pc"), "jack_android": connect(jack, res="android"),
             "rose_pc": connect(rose, res="pc"), "rose_iphone": connect(rose, res="iphone"),
             "tom": connect(tom, res="pc")}
    befriend(conns["jack_pc"], conns["rose_pc"])
    for conn in conns.values():
        conn.drain(0.1)
    return conns


def test_presence_between_friends_with_two_resources_each(friends):
    jack_pc, jack_android = friends["jack_pc"], friends["jack_android"]
    rose_pc, rose_iphone = friends["rose_pc"], friends["rose_iphone"]
    announce(rose_pc, "chat")
    announce(rose_iphone, "away")

    announce(jack_pc)  # rose's two devices learn it; jack@pc gets one ack per rose device
    expect(rose_pc, jack_pc, "online", "online")
    expect(rose_iphone, jack_pc, "online", "online")
    expect(jack_pc, rose_pc, "ack", "chat")
    expect(jack_pc, rose_iphone, "ack", "away")
    jack_android.assert_silent()  # not announced: invisible, and told nothing

    announce(jack_android, "xa")
    expect(rose_pc, jack_android, "online", "xa")
    expect(rose_iphone, jack_android, "online", "xa")
    expect(jack_android, rose_pc, "ack", "chat")
    expect(jack_android, rose_iphone, "ack", "away")
    jack_pc.assert_silent()  # a user's own devices are not friends of each other

    jack_pc.send(PRESENCE, {"type": "update", "show": "dnd"})
    expect(rose_pc, jack_pc, "state", "dnd")
    expect(rose_iphone, jack_pc, "state", "dnd")
    rose_pc.send(PRESENCE, {"type": "state", "show": "online"})
    expect(jack_pc, rose_pc, "state", "online")
    expect(jack_android, rose_pc, "state", "online")

    jack_pc.request(PRESENCE, {"type": "leave"})
    expect(rose_pc, jack_pc, "leave", "offline")
    expect(rose_iphone, jack_pc, "leave", "offline")
    rose_iphone.send(PRESENCE, {"type": "update", "show": "dnd"})
    expect(jack_android, rose_iphone, "state", "dnd")
    jack_pc.assert_silent()  # left: deaf again
    for conn in (jack_pc, jack_android, rose_pc, rose_iphone):
        conn.assert_silent(match=protocol.IM_MESSAGE_ACK)  # frames without msgid: no ACK


def test_presence_never_reaches_a_non_friend(friends):
    jack_pc, rose_pc, tom = friends["jack_pc"], friends["rose_pc"], friends["tom"]
    announce(tom)
    announce(rose_pc)
    announce(jack_pc)
    jack_pc.send(PRESENCE, {"type": "update", "show": "dnd"})
    jack_pc.send(PRESENCE, {"type": "leave"})
    expect(rose_pc, jack_pc, "online", "online")
    expect(rose_pc, jack_pc, "state", "dnd")
    expect(rose_pc, jack_pc, "leave", "offline")
    tom.assert_silent()
    tom.send(PRESENCE, {"type": "update", "show": "chat"})
    jack_pc.drain(0.1)
    rose_pc.assert_silent()


def test_leave_is_sent_once_when_an_announced_connection_closes(friends, connect):
    jack_pc, rose_pc, rose_iphone = friends["jack_pc"], friends["rose_pc"], friends["rose_iphone"]
    announce(rose_pc)
    announce(jack_pc)
    rose_pc.drain(0.1)
    jack_pc.send(PRESENCE, {"type": "leave"})
    announce(jack_pc, "away")  # a new announcement on the same connection
    jack_pc.close()
    expect(rose_pc, jack_pc, "leave", "offline")
    expect(rose_pc, jack_pc, "online", "away")
    expect(rose_pc, jack_pc, "leave", "offline")
    rose_pc.assert_silent(quiet=0.5)

    friends["jack_android"].close()  # never announced: its disconnect says nothing
    rose_iphone.close()
    rose_pc.assert_silent(quiet=0.3)


def test_leave_is_sent_when_a_conflicting_login_kicks_the_connection(friends, connect):
    jack_pc, rose_pc = friends["jack_pc"], friends["rose_pc"]
    announce(rose_pc)
    announce(jack_pc, "dnd")
    rose_pc.drain(0.1)

    new_pc = connect(jack_pc.uid, res="pc")
    jack_pc.wait(protocol.IM_NOTIFY_KICK, reason="conflict")
    expect(rose_pc, jack_pc, "leave", "offline")
    rose_pc.assert_silent(quiet=0.5)
    announce(new_pc, "chat")
    expect(rose_pc, new_pc, "online", "chat")
    expect(new_pc, rose_pc, "ack", "online")


def test_bad_presence_frames(friends):
    jack_pc, tom = friends["jack_pc"], friends["tom"]
    for body in ({"type": "online", "show": "busy"}, {"type": "online", "show": 1},
                 {"type": "dance", "show": "online"}):
        with pytest.raises(RequestFailed) as err:
            jack_pc.request(PRESENCE, body)
        assert err.value.code == "bad_request"
    with pytest.raises(RequestFailed) as err:  # update before announcing
        jack_pc.request(PRESENCE, {"type": "update", "show": "dnd"})
    assert err.value.code == "bad_request"
    jack_pc.send(PRESENCE, {"type": "update", "show": "nonsense"})  # no msgid, still answered
    _, ack = jack_pc.wait(protocol.IM_MESSAGE_ACK, type=str(PRESENCE))
    assert (ack["msgid"], ack["code"]) == ("", "bad_request")
    announce(jack_pc)
    tom.assert_silent()


def test_ack_goes_to_one_friend_connection_and_never_to_a_non_friend(friends):
    jack_pc, rose_pc, rose_iphone, tom = (friends[k] for k in ("jack_pc", "rose_pc", "rose_iphone", "tom"))
    for conn in (tom, rose_pc, rose_iphone, jack_pc):
        announce(conn)
    for conn in (tom, rose_pc, rose_iphone, jack_pc):
        conn.drain(0.1)

    jack_pc.send(PRESENCE, {"type": "ack", "to": rose_pc.uid, "to_res": "iphone", "show": "dnd"})
    expect(rose_iphone, jack_pc, "ack", "dnd")
    rose_pc.assert_silent()

    with pytest.raises(RequestFailed) as err:
        jack_pc.request(PRESENCE, {"type": "ack", "to": tom.uid, "to_res": "pc", "show": "online"})
    assert err.value.code == "not_friend"
    jack_pc.send(PRESENCE, {"type": "ack", "to": tom.uid, "to_res": "pc", "show": "online"})
    jack_pc.assert_silent()  # without msgid: dropped silently
    tom.assert_silent()


def test_a_new_group_member_sees_each_peers_most_available_show(server, make_users, connect):
    """§6.15: chat > online > dnd > away > xa, "offline" with no announced device."""
    jack, rose, tom = make_users(3)
    devices = {show: connect(jack, res=show) for show in ("xa", "dnd", "away")}
    for show, conn in devices.items():
        announce(conn, show)
    tom_pc, rose_pc = connect(tom), connect(rose)
    announce(tom_pc, "xa")
    gid = server.http(devices["dnd"].token).qid("QID_IM_SET_GROUP", gname="ranks")["result"]
    for member in (tom_pc, rose_pc):
        devices["dnd"].request(protocol.IM_CHATROOM, {"msgid": "i-" + member.uid, "type": "0",
                                                      "gid": gid, "to": member.uid})
        member.request(protocol.IM_CHATROOM, {"msgid": "i-" + member.uid, "type": "1", "gid": gid,
                                              "to": jack, "fname": "", "accept": True})
    _, data = rose_pc.wait(protocol.IM_NOTIFY_GROUP_DATA, gid=gid)
    assert {p["uid"]: p["show"] for p in data["peers"]} == {jack: "dnd", tom: "xa", rose: "offline"}
