"""The frame decoder (PROTOCOL.md §1.1), as a pure unit: a corpus of streams, each fed whole,
byte by byte and in random chunks, must decode identically; bad frames are reported as
FrameError items and decoding goes on, except after an oversize frame (fatal)."""

import random
import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from im import protocol
from im.protocol import Frame, FrameDecoder, FrameError, encode, msgid_of

MAX = 1024


def raw(msgtype: int, data: bytes) -> bytes:
    """A frame with an arbitrary (possibly invalid) body."""
    return struct.pack(">II", len(data), msgtype) + data


def body_of_size(n: int) -> dict:
    """A JSON object whose encoding is exactly n bytes (n >= 8)."""
    body = {"p": "x" * (n - 8)}
    assert len(orjson.dumps(body)) == n
    return body


VALID = [
    ("empty body", raw(protocol.IM_HEARTBEAT, b""), [Frame(protocol.IM_HEARTBEAT, {})]),
    ("empty object", encode(protocol.IM_HEARTBEAT, {}), [Frame(protocol.IM_HEARTBEAT, {})]),
    ("unicode", encode(protocol.IM_MESSAGE, {"body": "你好 😀 é"}),
     [Frame(protocol.IM_MESSAGE, {"body": "你好 😀 é"})]),
    ("nested", encode(protocol.IM_CHATROOM, {"a": {"b": [1, {"c": None}], "d": True}}),
     [Frame(protocol.IM_CHATROOM, {"a": {"b": [1, {"c": None}], "d": True}})]),
    ("max size", encode(7, body_of_size(MAX)), [Frame(7, body_of_size(MAX))]),
    ("whitespace around", raw(9, b' \n{"a": 1}\t '), [Frame(9, {"a": 1})]),
    ("three in a row", encode(1, {"n": 1}) + encode(2, {"n": 2}) + raw(3, b""),
     [Frame(1, {"n": 1}), Frame(2, {"n": 2}), Frame(3, {})]),
    ("largest msgtype", encode(0xFFFFFFFF, {}), [Frame(0xFFFFFFFF, {})]),
]

BAD = [
    ("bad utf-8", raw(5, b'{"a": "\xff\xfe"}')),
    ("truncated utf-8", raw(5, '{"a": "é'.encode()[:-1])),
    ("lone surrogate", raw(5, b'{"a": "\\ud800"}')),
    ("not json", raw(5, b"{nope")),
    ("trailing garbage", raw(5, b'{"a": 1} x')),
    ("list", raw(5, b"[1, 2]")),
    ("number", raw(5, b"42")),
    ("string", raw(5, b'"hello"')),
    ("null", raw(5, b"null")),
    ("too deep", raw(5, b"[" * 2000 + b"]" * 2000)),
]


def summary(items: list) -> list:
    """Comparable form of a decoder's output."""
    return [("error", i.code, i.msgtype, i.fatal) if isinstance(i, FrameError)
            else ("frame", i.msgtype, i.body) for i in items]


def feed_whole(stream: bytes, max_frame: int = MAX) -> list:
    return FrameDecoder(max_frame).feed(stream)


def feed_bytewise(stream: bytes, max_frame: int = MAX) -> list:
    decoder = FrameDecoder(max_frame)
    return [item for i in range(len(stream)) for item in decoder.feed(stream[i:i + 1])]


def feed_chunks(stream: bytes, cuts: list[int], max_frame: int = MAX) -> list:
    decoder = FrameDecoder(max_frame)
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    return [item for a, b in zip(bounds, bounds[1:]) for item in decoder.feed(stream[a:b])]


def all_splits_agree(stream: bytes, max_frame: int = MAX) -> list:
    """Decode `stream` whole, byte by byte and in random chunks; return the common summary."""
    whole = summary(feed_whole(stream, max_frame))
    assert summary(feed_bytewise(stream, max_frame)) == whole
    rng = random.Random(len(stream))
    for _ in range(5):
        cuts = [rng.randrange(len(stream) + 1) for _ in range(rng.randrange(1, 8))]
        assert summary(feed_chunks(stream, cuts, max_frame)) == whole
    return whole


@pytest.mark.parametrize("name,stream,expected", VALID, ids=[v[0] for v in VALID])
def test_valid_frames_decode_identically_however_split(name, stream, expected):
    assert all_splits_agree(stream) == summary(expected)


@pytest.mark.parametrize("name,frame", BAD, ids=[b[0] for b in BAD])
def test_bad_body_is_bad_request_and_decoding_continues(name, frame):
    stream = encode(1, {"before": 1}) + frame + encode(2, {"after": 2})
    assert all_splits_agree(stream, max_frame=8192) == [
        ("frame", 1, {"before": 1}), ("error", "bad_request", 5, False), ("frame", 2, {"after": 2})]


def test_every_valid_frame_back_to_back():
    stream = b"".join(v[1] for v in VALID)
    expected = [s for v in VALID for s in summary(v[2])]
    assert all_splits_agree(stream) == expected


def test_oversize_frame_is_fatal_and_nothing_follows():
    stream = encode(1, {"ok": 1}) + raw(6, b"x" * (MAX + 1)) + encode(2, {"lost": 1})
    result = all_splits_agree(stream)
    assert result == [("frame", 1, {"ok": 1}), ("error", "frame_too_large", 6, True)]


def test_oversize_is_detected_from_the_header_alone():
    decoder = FrameDecoder(MAX)
    items = decoder.feed(struct.pack(">II", 0xFFFFFFFF, 3))
    assert summary(items) == [("error", "frame_too_large", 3, True)]
    assert decoder.broken
    assert decoder.feed(encode(1, {})) == []


def test_incomplete_frame_waits_for_the_rest():
    decoder = FrameDecoder(MAX)
    frame = encode(4, {"a": "b"})
    assert decoder.feed(frame[:3]) == []
    assert decoder.feed(frame[3:-1]) == []
    assert summary(decoder.feed(frame[-1:])) == [("frame", 4, {"a": "b"})]


def test_encode_accepts_pre_encoded_body():
    assert encode(3, b'{"a":1}') == encode(3, {"a": 1})


@pytest.mark.parametrize("body,expected", [
    ({"msgid": "m1"}, "m1"), ({"msgid": "x" * 50}, "x" * 50), ({"msgid": "x" * 51}, ""),
    ({"msgid": ""}, ""), ({"msgid": 12}, ""), ({"msgid": None}, ""), ({}, ""),
    ({"msgid": ["m"]}, ""),
])
def test_msgid_of(body, expected):
    assert msgid_of(body) == expected


# --- properties ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
frames = st.tuples(st.integers(0, 2**32 - 1), st.dictionaries(st.text(max_size=8), json_values, max_size=5))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=10), st.integers(8, 4096))
def test_random_bytes_only_ever_yield_frames_or_frame_errors(chunks, max_frame):
    decoder = FrameDecoder(max_frame)
    for chunk in chunks:
        for item in decoder.feed(chunk):
            assert isinstance(item, (Frame, FrameError))
            if isinstance(item, FrameError):
                assert item.code in ("bad_request", "frame_too_large")
            else:
                assert isinstance(item.body, dict)


@settings(max_examples=80, deadline=None)
@given(st.lists(frames, min_size=1, max_size=6), st.lists(st.integers(0, 10_000), max_size=10))
def test_random_splits_of_a_valid_stream_decode_identically(items, cuts):
    stream = b"".join(encode(mt, body) for mt, body in items)
    expected = [("frame", mt, body) for mt, body in items]
    assert summary(feed_whole(stream, 1 << 20)) == expected
    assert summary(feed_chunks(stream, cuts, 1 << 20)) == expected


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(frames.map(lambda f: encode(*f)), st.binary(max_size=30).map(lambda b: raw(8, b))),
                max_size=6),
       st.lists(st.integers(0, 10_000), max_size=10))
def test_mixed_good_and_bad_frames_decode_identically_however_split(parts, cuts):
    stream = b"".join(parts)
    assert summary(feed_chunks(stream, cuts, 1 << 20)) == summary(feed_whole(stream, 1 << 20))
