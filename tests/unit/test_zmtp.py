"""protocol.zmtp: ZMTP 3.0 framing and the NULL handshake, without sockets."""

from __future__ import annotations

import struct

import pytest

from protocol import zmtp


def _peer_greeting(mechanism: bytes = b"NULL", major: int = 3, minor: int = 1) -> bytes:
    return (b"\xff" + b"\x00" * 8 + b"\x7f" + bytes((major, minor))
            + mechanism.ljust(20, b"\x00") + b"\x01" + b"\x00" * 31)


def _command(name: bytes, data: bytes) -> bytes:
    body = bytes((len(name),)) + name + data
    return bytes((0x04, len(body))) + body


def _ready(socket_type: bytes, *, key: bytes = b"Socket-Type") -> bytes:
    prop = bytes((len(key),)) + key + struct.pack(">I", len(socket_type)) + socket_type
    return _command(b"READY", prop)


def _ready_peer(socket_type: bytes = b"XPUB") -> zmtp.Peer:
    peer = zmtp.Peer()
    assert peer.receive(_peer_greeting() + _ready(socket_type)) == [zmtp.Ready(socket_type)]
    return peer


def test_greeting_says_zmtp_3_0_null_as_client() -> None:
    got = zmtp.greeting()
    assert len(got) == 64
    assert got[0] == 0xFF and got[9] == 0x7F
    assert got[10:12] == b"\x03\x00"
    assert got[12:32] == b"NULL" + b"\x00" * 16
    assert got[32] == 0  # as-server: no


def test_ready_names_the_socket_type_and_parses_back() -> None:
    peer = zmtp.Peer()
    assert peer.receive(_peer_greeting() + zmtp.ready(b"SUB")) == [zmtp.Ready(b"SUB")]
    assert peer.ready


def test_ready_property_names_are_case_insensitive_and_others_skipped() -> None:
    identity = b"\x08Identity" + struct.pack(">I", 0)
    socket_type = b"\x0bsocket-type" + struct.pack(">I", 4) + b"XPUB"
    peer = zmtp.Peer()
    got = peer.receive(_peer_greeting() + _command(b"READY", identity + socket_type))
    assert got == [zmtp.Ready(b"XPUB")]


def test_messages_round_trip_short_long_and_multipart() -> None:
    parts = [b"topic", b"", b"x" * 255, b"y" * 256, b"z" * 70_000]
    peer = _ready_peer()
    assert peer.receive(zmtp.message(parts)) == [parts]


def test_every_split_of_the_stream_gives_the_same_messages() -> None:
    stream = (_peer_greeting() + _ready(b"XPUB") + zmtp.message([b"a", b"b" * 300])
              + _command(b"PING", b"\x00\x0actx") + zmtp.message([b"c"]))
    whole = zmtp.Peer().receive(stream)
    assert whole == [zmtp.Ready(b"XPUB"), [b"a", b"b" * 300], zmtp.Ping(b"ctx"), [b"c"]]
    for cut in range(1, len(stream)):
        peer = zmtp.Peer()
        assert peer.receive(stream[:cut]) + peer.receive(stream[cut:]) == whole, cut
    peer = zmtp.Peer()
    assert [item for i in range(len(stream)) for item in peer.receive(stream[i:i + 1])] == whole


def test_ping_context_is_what_pong_sends_back() -> None:
    peer = _ready_peer()
    (ping,) = peer.receive(_command(b"PING", b"\x00\x1e" + b"c" * 16))
    assert ping == zmtp.Ping(b"c" * 16)
    assert zmtp.pong(ping.context) == _command(b"PONG", b"c" * 16)
    assert zmtp.ping() == _command(b"PING", b"\x00\x00")


def test_pong_and_unknown_commands_after_ready_are_quiet() -> None:
    peer = _ready_peer()
    assert peer.receive(_command(b"PONG", b"") + _command(b"SUBSCRIBE", b"room")) == []


def test_subscription_is_a_data_frame_with_a_flag_byte() -> None:
    assert zmtp.subscription(b"room:1", True) == b"\x00\x07\x01room:1"
    assert zmtp.subscription(b"room:1", False) == b"\x00\x07\x00room:1"


@pytest.mark.parametrize(("stream", "says"), [
    (b"GET / HTTP/1.1\r\n", "bad signature"),
    (_peer_greeting(major=2), "too old"),
    (_peer_greeting(b"CURVE"), "CURVE mechanism"),
    (_peer_greeting() + zmtp.message([b"early"]), "before the handshake"),
    (_peer_greeting() + _command(b"ERROR", b"\x0bno access!!"), "no access!!"),
    (_peer_greeting() + _command(b"PING", b""), "during the handshake"),
    (_peer_greeting() + _ready(b"XPUB") + _ready(b"XPUB"), "second READY"),
    (_peer_greeting() + b"\x06" + struct.pack(">Q", zmtp.MAX_FRAME + 1), "a frame of"),
    (_peer_greeting() + b"\x04\x05\x09READY", "malformed command"),
    (_peer_greeting() + _command(b"READY", b"\x0bSocket-Type\x00\x00"), "malformed READY"),
])
def test_a_broken_peer_is_refused_with_the_reason(stream: bytes, says: str) -> None:
    with pytest.raises(zmtp.ZmtpError, match=says):
        zmtp.Peer().receive(stream)


def test_a_long_frame_arriving_in_many_reads_comes_out_whole() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    stream = zmtp.message([b"t", big]) + zmtp.message([b"after"])
    peer = _ready_peer()
    got = [item for i in range(0, len(stream), 1000) for item in peer.receive(stream[i:i + 1000])]
    assert got == [[b"t", big], [b"after"]]


@pytest.mark.parametrize(("endpoint", "dial", "bind"), [
    ("tcp://127.0.0.1:5555", ("127.0.0.1", 5555), ("127.0.0.1", 5555)),
    ("tcp://[::1]:5555", ("::1", 5555), ("::1", 5555)),
    ("tcp://localhost:5555", ("localhost", 5555), ("localhost", 5555)),
    ("tcp://broker.internal:5555", ("broker.internal", 5555), None),  # an interface name?
    ("tcp://*:5555", None, ("0.0.0.0", 5555)),  # libzmq's every-IPv4-address
    ("tcp://127.0.0.1:*", None, None),  # a port of libzmq's choosing
    ("tcp://10.0.0.1;10.0.0.2:5555", None, None),  # a source address
    ("ipc:///run/roomcast/pub", "/run/roomcast/pub", "/run/roomcast/pub"),
    ("ipc://@abstract", None, None),  # uvloop cannot use Linux's abstract names
    ("inproc://hub", None, None),
])
def test_which_endpoints_are_spoken_without_libzmq(
        endpoint: str, dial: object, bind: object) -> None:
    assert zmtp.address(endpoint) == dial
    assert zmtp.address(endpoint, bind=True) == bind
