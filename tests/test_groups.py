"""Groups over TCP (PROTOCOL.md §1.9, §1.5, §6.2, §6.3, §6.10, §6.15): conversations between
users on two devices — invitations, answers, joining, leaving, kicks and dismissal."""

import time
import uuid

import pytest

from im import protocol
from im.client import RequestFailed, rows

CHATROOM = protocol.IM_CHATROOM
PEER_ADD = protocol.IM_NOTIFY_GROUP_PEER_ADD
PEER_DEL = protocol.IM_NOTIFY_GROUP_PEER_DEL
GROUP_DATA = protocol.IM_NOTIFY_GROUP_DATA


def new_group(server, client, gname: str = "team", **params) -> str:
    """`client`'s user creates a group over HTTP with the client's session token."""
    return server.http(client.token).qid("QID_IM_SET_GROUP", gname=gname, **params)["result"]


def chatroom(client, **body) -> dict:
    return client.request(CHATROOM, body)


def refused(client, **body) -> str:
    """The error code of an IM_CHATROOM request that must fail."""
    with pytest.raises(RequestFailed) as failed:
        client.request(CHATROOM, body)
    return failed.value.code


def invite(inviter, gid: str, to: str) -> str:
    msgid = uuid.uuid4().hex
    chatroom(inviter, msgid=msgid, type="0", gid=gid, to=to)
    return msgid


def bring_in(admin, member, gid: str, fname: str = "") -> None:
    """admin invites member, who accepts; both drain the notifications."""
    msgid = invite(admin, gid, member.uid)
    member.wait(CHATROOM, msgid=msgid)
    chatroom(member, msgid=msgid, type="1", gid=gid, to=admin.uid, fname=fname, accept=True)
    member.wait(GROUP_DATA, gid=gid)
    admin.wait(PEER_ADD, gid=gid, uid=member.uid)


def invitation_state(server, inviter: str, msgid: str) -> int:
    return server.sql("SELECT state FROM tp_im_group_req WHERE msgfrom = %s AND msgid = %s",
                      (inviter, msgid))[0][0]


def members(server, gid: str) -> dict:
    return dict(server.sql('SELECT userid, "right" FROM tp_im_group_peer WHERE gid = %s', (gid,)))


def test_invitation_reaches_every_device_of_rose_once(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc = connect(jack, "pc")
    rose_pc, rose_phone = connect(rose, "pc"), connect(rose, "phone")
    gid = new_group(server, jack_pc, "weekend")

    ack = chatroom(jack_pc, msgid="inv-1", type="0", gid=gid, to=rose)
    for device in (rose_pc, rose_phone):
        _, frame = device.wait(CHATROOM, msgid="inv-1")
        assert frame == {"msgid": "inv-1", "type": "0", "from": jack, "from_res": "pc",
                         "to": rose, "to_res": device.res, "gid": gid, "gname": "weekend"}
    assert invitation_state(server, jack, "inv-1") == 0

    # a retry (even with other content) gets the original ACK and reaches nobody again
    again = chatroom(jack_pc, msgid="inv-1", type="0", gid="other", to=jack)
    assert again["time"] == ack["time"]
    rose_pc.assert_silent()
    assert server.sql("SELECT count(*) FROM tp_im_group_req WHERE msgfrom = %s", (jack,)) == [(1,)]


def test_who_may_invite_whom(server, make_users, connect):
    jack, rose, tom = make_users(3)
    jack_pc, rose_pc, tom_pc = connect(jack), connect(rose), connect(tom)
    private = new_group(server, jack_pc, "private")
    bring_in(jack_pc, rose_pc, private)

    assert refused(rose_pc, type="0", gid=private, to=tom) == "forbidden"  # not an admin
    assert refused(tom_pc, type="0", gid=private, to=tom) == "not_member"
    assert refused(jack_pc, type="0", gid=private, to=rose) == "already_member"
    assert refused(jack_pc, type="0", gid=private, to="nobody-" + jack) == "no_such_user"
    assert refused(jack_pc, type="0", gid="999999999", to=tom) == "no_such_group"
    tom_pc.assert_silent()

    public = new_group(server, jack_pc, "public", type=2)
    bring_in(jack_pc, rose_pc, public)
    invite(rose_pc, public, tom)  # in a public group any member may invite
    tom_pc.wait(CHATROOM, type="0", gid=public, **{"from": rose})


def test_rose_accepts_and_everyone_learns_it(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc, jack_phone = connect(jack, "pc"), connect(jack, "phone")
    rose_pc, rose_phone = connect(rose, "pc"), connect(rose, "phone")
    jack_pc.request(protocol.IM_PRESENCE, {"type": "online", "show": "dnd"})
    gid = new_group(server, jack_pc, "weekend", exit=0)
    msgid = invite(jack_pc, gid, rose)

    chatroom(rose_phone, msgid=msgid, type="1", gid=gid, to=jack, fname="Rosie", accept=True)

    assert invitation_state(server, jack, msgid) == 1
    joined = server.sql('SELECT "right", fname, join_seq, sync_seq FROM tp_im_group_peer '
                        "WHERE gid = %s AND userid = %s", (gid, rose))
    assert joined == [("0", "Rosie", 0, 0)]
    for device in (jack_pc, jack_phone):
        _, added = device.wait(PEER_ADD, gid=gid)
        assert added == {"gid": gid, "uid": rose, "fname": "Rosie", "right": "0",
                         "join_time": added["join_time"]}
    for device in (rose_pc, rose_phone):
        _, data = device.wait(GROUP_DATA, gid=gid)
        assert {k: data[k] for k in ("gname", "type", "exit", "more")} == \
            {"gname": "weekend", "type": "1", "exit": "0", "more": "0"}
        assert [(p["uid"], p["right"], p["show"]) for p in data["peers"]] == \
            [(jack, "1", "dnd"), (rose, "0", "offline")]
        assert data["peers"][1]["fname"] == "Rosie" and data["peers"][1]["join_time"]
    rose_pc.assert_silent(match=PEER_ADD)


def test_only_rose_answers_and_only_once(server, make_users, connect):
    jack, rose, tom = make_users(3)
    jack_pc, rose_pc, tom_pc = connect(jack), connect(rose), connect(tom)
    gid = new_group(server, jack_pc)
    msgid = invite(jack_pc, gid, rose)

    assert refused(tom_pc, msgid=msgid, type="1", gid=gid, to=jack, accept=True) == "forbidden"
    assert invitation_state(server, jack, msgid) == 0 and tom not in members(server, gid)
    assert refused(rose_pc, msgid="no-such-invitation", type="1", gid=gid, accept=True) == "not_found"
    assert refused(rose_pc, msgid=msgid, type="1", gid=gid, accept="maybe") == "bad_request"

    chatroom(rose_pc, msgid=msgid, type="1", gid=gid, accept=True)  # without `to`: the only one
    assert refused(rose_pc, msgid=msgid, type="1", gid=gid, to=jack, accept=True) == \
        "already_handled"
    assert refused(rose_pc, msgid=msgid, type="1", gid=gid, accept=False) == "already_handled"
    assert invitation_state(server, jack, msgid) == 1 and members(server, gid)[rose] == "0"


def test_rose_rejects_and_jack_hears_it(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc, jack_phone, rose_pc = connect(jack, "pc"), connect(jack, "phone"), connect(rose)
    gid = new_group(server, jack_pc)
    msgid = invite(jack_pc, gid, rose)

    chatroom(rose_pc, msgid=msgid, type="1", gid=gid, to=jack, accept=False)

    for device in (jack_pc, jack_phone):
        _, frame = device.wait(CHATROOM, msgid=msgid, type="1")
        assert frame == {"msgid": msgid, "type": "1", "from": rose, "from_res": rose_pc.res,
                         "to": jack, "to_res": device.res, "gid": gid, "accept": False}
    assert invitation_state(server, jack, msgid) == 2 and rose not in members(server, gid)
    rose_pc.assert_silent(match=GROUP_DATA)


def test_leaving_a_group(server, make_users, connect):
    jack, rose, tom = make_users(3)
    jack_pc, rose_pc, tom_pc = connect(jack), connect(rose), connect(tom)
    locked = new_group(server, jack_pc, "locked", type=2, exit=0)
    chatroom(rose_pc, type="5", gid=locked)
    assert refused(rose_pc, type="2", rid=locked) == "cannot_exit"
    assert refused(tom_pc, type="2", rid=locked) == "not_member"
    assert refused(tom_pc, type="2", rid="999999999") == "no_such_group"

    # the last admin leaves: the longest-standing member becomes admin
    gid = new_group(server, jack_pc, "open", type=2)
    for member in (rose_pc, tom_pc):
        chatroom(member, type="5", gid=gid)
    chatroom(jack_pc, msgid="bye", type="2", rid=gid)
    for member in (rose_pc, tom_pc):
        _, frame = member.wait(CHATROOM, msgid="bye")
        assert frame == {"msgid": "bye", "type": "2", "from": jack, "from_res": jack_pc.res,
                         "to": member.uid, "to_res": member.res, "rid": gid}
    assert members(server, gid) == {rose: "1", tom: "0"}
    rose_groups = rows(server.http(rose_pc.token).qid("QID_IM_GET_GROUP_LIST"))
    assert [(g["gid"], g["right"]) for g in rose_groups if g["gid"] == gid] == [(gid, "1")]

    # the last member leaves: the group is gone
    chatroom(tom_pc, type="2", rid=gid)
    chatroom(rose_pc, type="2", rid=gid)
    status, body, _ = server.http(rose_pc.token).call(
        "POST", "/api/QID_IM_GET_GROUP_PEER_LIST", {"gid": gid})
    assert (status, body["code"]) == (404, "no_such_group")
    assert refused(jack_pc, type="5", gid=gid) == "no_such_group"


def test_admin_and_next_in_line_leave_together(server, make_users, connect):
    jack, rose, tom, amy = make_users(4)
    jack_pc, rose_pc, tom_pc, amy_pc = (connect(u) for u in (jack, rose, tom, amy))
    gid = new_group(server, jack_pc, "open", type=2)
    for member in (rose_pc, tom_pc, amy_pc):
        chatroom(member, type="5", gid=gid)

    for leaver in (jack_pc, rose_pc):  # both frames are in flight at once
        leaver.send(CHATROOM, {"msgid": "bye", "type": "2", "rid": gid})
    for leaver in (jack_pc, rose_pc):
        leaver.ack_for(CHATROOM, "bye")
    assert members(server, gid) == {tom: "1", amy: "0"}


def test_kicking_a_member(server, make_users, connect):
    jack, rose, tom = make_users(3)
    jack_pc, rose_pc, rose_phone, tom_pc = connect(jack), connect(rose, "pc"), \
        connect(rose, "phone"), connect(tom)
    gid = new_group(server, jack_pc, "open", type=2)
    for member in (rose_pc, tom_pc):
        chatroom(member, type="5", gid=gid)

    assert refused(tom_pc, type="3", gid=gid, to=rose) == "forbidden"
    assert refused(jack_pc, type="3", gid=gid, to="stranger") == "not_member"
    chatroom(jack_pc, type="3", gid=gid, to=rose)

    for device in (jack_pc, rose_pc, rose_phone, tom_pc):
        _, frame = device.wait(PEER_DEL, gid=gid)
        assert frame == {"gid": gid, "uid": rose, "by": jack}
    assert set(members(server, gid)) == {jack, tom}
    for device in (rose_pc, rose_phone):
        device.drain()

    try:
        tom_pc.message(gid, "rose is gone", group=True)
    except RequestFailed as failed:
        if failed.code == "unknown_type":
            pytest.skip("group chat (IM_MESSAGE type 1) is not implemented yet")
        raise
    jack_pc.wait(protocol.IM_MESSAGE, body="rose is gone")
    rose_pc.assert_silent(match=protocol.IM_MESSAGE)
    rose_phone.assert_silent(match=protocol.IM_MESSAGE)


def test_dismissing_a_group(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc, rose_pc = connect(jack), connect(rose)
    gid = new_group(server, jack_pc, "short-lived", type=2)
    chatroom(rose_pc, type="5", gid=gid)
    jack_pc.wait(PEER_ADD, gid=gid)
    assert refused(rose_pc, type="4", gid=gid) == "forbidden"

    chatroom(jack_pc, type="4", gid=gid)

    for device in (jack_pc, rose_pc):
        assert device.wait(PEER_DEL, gid=gid)[1] == {"gid": gid, "uid": "*"}
    http = server.http(rose_pc.token)
    status, body, _ = http.call("POST", "/api/QID_IM_GET_GROUP_PEER_LIST", {"gid": gid})
    assert (status, body["code"]) == (404, "no_such_group")
    assert rows(http.qid("QID_IM_GET_GROUP_LIST")) == []
    assert refused(jack_pc, type="0", gid=gid, to=rose) == "no_such_group"


def test_joining_public_groups_only(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc, rose_pc = connect(jack), connect(rose)
    public = new_group(server, jack_pc, "lobby", type=2)
    private = new_group(server, jack_pc, "secret")

    chatroom(rose_pc, type="5", gid=public, fname="Rosie")
    _, data = rose_pc.wait(GROUP_DATA, gid=public)
    assert [p["uid"] for p in data["peers"]] == [jack, rose] and data["type"] == "2"
    assert jack_pc.wait(PEER_ADD, gid=public)[1]["fname"] == "Rosie"

    assert refused(rose_pc, type="5", gid=public) == "already_member"
    assert refused(rose_pc, type="5", gid=private) == "forbidden"
    assert refused(rose_pc, type="5", gid="999999999") == "no_such_group"

    # an invitation overtaken by a join is closed all the same, so it is not re-sent
    tom, = make_users(1)
    tom_pc = connect(tom)
    msgid = invite(jack_pc, public, tom)
    chatroom(tom_pc, type="5", gid=public)
    assert refused(tom_pc, msgid=msgid, type="1", to=jack, accept=True) == "already_member"
    assert invitation_state(server, jack, msgid) == 1


def test_invitations_wait_for_rose_to_log_in(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc = connect(jack)
    gid = new_group(server, jack_pc, "weekend")
    msgid = invite(jack_pc, gid, rose)

    for res in ("pc", "phone"):  # not received yet: every new login gets it
        device = connect(rose, res)
        _, frame = device.wait(CHATROOM, msgid=msgid)
        assert frame == {"msgid": msgid, "type": "0", "from": jack, "from_res": "",
                         "to": rose, "to_res": res, "gid": gid, "gname": "weekend"}
    chatroom(device, msgid=msgid, type="1", to=jack, accept=True)
    connect(rose, "tablet").assert_silent(match=CHATROOM)


def test_a_received_invitation_is_not_sent_again(server, make_users, connect):
    jack, rose = make_users(2)
    jack_pc, rose_pc = connect(jack), connect(rose, "pc")
    gid = new_group(server, jack_pc)
    msgid = invite(jack_pc, gid, rose)
    rose_pc.wait(CHATROOM, msgid=msgid)

    rose_pc.send(protocol.IM_MESSAGE_ACK, {"type": protocol.IM_CHATROOM_INVENT, "msgid": msgid,
                                           "from": jack})
    deadline = time.monotonic() + 5
    while server.sql("SELECT received FROM tp_im_group_req WHERE msgfrom = %s AND msgid = %s",
                     (jack, msgid)) != [(1,)]:
        assert time.monotonic() < deadline, "the receipt was not stored"
        time.sleep(0.05)
    connect(rose, "phone").assert_silent(match=CHATROOM)


def test_bad_chatroom_frames(server, make_users, connect):
    jack, = make_users(1)
    jack_pc = connect(jack)
    gid = new_group(server, jack_pc)
    assert refused(jack_pc, type="9", gid=gid) == "bad_request"
    assert refused(jack_pc, type=True, gid=gid) == "bad_request"
    assert refused(jack_pc, type="0", gid=gid) == "bad_request"  # no `to`
    assert refused(jack_pc, type="2") == "bad_request"  # no `rid`
    jack_pc.send(CHATROOM, {"type": "4", "gid": gid})  # no msgid
    _, ack = jack_pc.wait(protocol.IM_MESSAGE_ACK, type=str(CHATROOM))
    assert (ack["msgid"], ack["code"]) == ("", "bad_request")
    assert members(server, gid) == {jack: "1"}
