"""Autobahn section 6: UTF-8 in text messages (RFC 6455 sections 5.6 and 8.1).

A text message that is not valid UTF-8 fails the connection with 1007,
whether it arrives whole or in fragments. Valid UTF-8 that is not JSON is a
chat-protocol error (`bad_json`) and the connection stays open; valid UTF-8
inside a chat frame is answered as usual.
"""

from __future__ import annotations

import itertools

import pytest

from protocol.frames import masked_frame
from protocol.websocket import OP_CONTINUATION, OP_TEXT
from tests.conformance.peer import PING, Peer

KOSME = bytes.fromhex("cebae1bdb9cf83cebcceb5")  # "κόσμε", Autobahn's sample
# 6.3.1: "κόσμε", a lone UTF-16 surrogate (U+D800 encoded), "edited".
INVALID_6_3_1 = KOSME + bytes.fromhex("eda080") + b"edited"


def fragments(payload: bytes, cuts: list[int]) -> list[bytes]:
    """`payload` as a text message split at the byte offsets `cuts`."""
    bounds = [0, *cuts, len(payload)]
    parts = [payload[a:b] for a, b in itertools.pairwise(bounds)]
    last = len(parts) - 1
    return [
        masked_frame(OP_TEXT if i == 0 else OP_CONTINUATION, part, fin=i == last)
        for i, part in enumerate(parts)
    ]


# 6.1: empty messages.

def test_case_6_1_1(ws: Peer) -> None:
    # 6.1.1: an empty text message is valid UTF-8 (and not JSON).
    ws.send(masked_frame(OP_TEXT, b""))
    ws.expect_error("bad_json")


def test_case_6_1_2(ws: Peer) -> None:
    # 6.1.2: an empty text message in three empty fragments.
    ws.send(*fragments(b"", [0, 0]))
    ws.expect_error("bad_json")


def test_case_6_1_3(ws: Peer) -> None:
    # 6.1.3: three fragments, the first and last empty.
    ws.send(*fragments(PING, [0, len(PING)]))
    ws.expect_pong_reply()


# 6.2: valid multi-byte UTF-8, whole and split at every byte.

HELLO = "Hello-µ@ßöäüàá-UTF-8!!"
HELLO_PING = b'{"type":"ping","text":"' + HELLO.encode() + b'"}'  # unknown fields are ignored
KOSME_PING = b'{"type":"ping","text":"' + KOSME + b'"}'


@pytest.mark.parametrize(
    "payload", [pytest.param(HELLO_PING, id="6.2.1"), pytest.param(KOSME_PING, id="6.2.1-kosme")]
)
def test_case_6_valid_utf8_in_a_chat_frame(ws: Peer, payload: bytes) -> None:
    ws.send(masked_frame(OP_TEXT, payload))
    ws.expect_pong_reply()


@pytest.mark.parametrize(
    "payload", [pytest.param(HELLO_PING, id="6.2.2"), pytest.param(KOSME_PING, id="6.2.2-kosme")]
)
def test_case_6_valid_utf8_split_in_two_at_every_byte(ws: Peer, payload: bytes) -> None:
    # 6.2.2 splits once at a code point boundary; here every offset is tried,
    # most of them inside a multi-byte sequence: the message is still valid.
    for cut in range(1, len(payload)):
        ws.send(*fragments(payload, [cut]))
        ws.expect_pong_reply()


@pytest.mark.parametrize(
    "payload", [pytest.param(HELLO_PING, id="6.2.3"), pytest.param(KOSME_PING, id="6.2.4")]
)
def test_case_6_valid_utf8_a_byte_per_fragment(ws: Peer, payload: bytes) -> None:
    ws.send(*fragments(payload, list(range(1, len(payload)))))
    ws.expect_pong_reply()


# 6.3, 6.4: invalid UTF-8, whole, in fragments, and arriving bit by bit.

def test_case_6_3_1(ws: Peer) -> None:
    ws.send(masked_frame(OP_TEXT, INVALID_6_3_1))
    ws.expect_close(1007)


def test_case_6_3_2(ws: Peer) -> None:
    # 6.3.2: the same, a byte per fragment.
    ws.send(*fragments(INVALID_6_3_1, list(range(1, len(INVALID_6_3_1)))))
    ws.expect_close(1007)


@pytest.mark.parametrize(
    "cut", [pytest.param(cut, id=f"6.3.1-cut{cut}") for cut in range(1, len(INVALID_6_3_1))]
)
def test_case_6_3_1_split_in_two(ws: Peer, cut: int) -> None:
    # 6.3.1 in two fragments, split at every offset: the split never hides
    # (or creates) the invalid sequence.
    ws.send(*fragments(INVALID_6_3_1, [cut]))
    ws.expect_close(1007)


# 6.4: the part that makes the message invalid comes in the middle. Autobahn
# waits between the parts to see whether the server fails fast; the RFC asks
# only that the connection fails, so all parts are sent and 1007 expected.
PARTS_6_4_1 = [KOSME, bytes.fromhex("f4908080"), b"edited"]  # U+110000: beyond Unicode
PARTS_6_4_2 = [KOSME + b"\xf4", b"\x90", b"\x80\x80edited"]


@pytest.mark.parametrize(
    ("parts", "as_fragments"),
    [
        pytest.param(PARTS_6_4_1, True, id="6.4.1"),
        pytest.param(PARTS_6_4_2, True, id="6.4.2"),
        pytest.param(PARTS_6_4_1, False, id="6.4.3"),
        pytest.param(PARTS_6_4_2, False, id="6.4.4"),
    ],
)
def test_case_6_4(ws: Peer, parts: list[bytes], as_fragments: bool) -> None:
    # 6.4.1, 6.4.2: three fragments; 6.4.3, 6.4.4: one frame in three TCP writes.
    payload = b"".join(parts)
    if as_fragments:
        cuts = [len(parts[0]), len(parts[0]) + len(parts[1])]
        for frame in fragments(payload, cuts):
            ws.send(frame)
    else:
        frame = masked_frame(OP_TEXT, payload)
        head = len(frame) - len(payload)
        first, second = head + len(parts[0]), head + len(parts[0]) + len(parts[1])
        for chunk in (frame[:first], frame[first:second], frame[second:]):
            ws.send(chunk)
    ws.expect_close(1007)


# 6.5-6.23: Markus Kuhn's UTF-8 decoder stress test, as Autobahn samples it.
# (case, hex bytes, valid?)
SAMPLES = [
    # 6.5: valid text, one to four bytes per code point.
    ("6.5.1", b"hello$world".hex(), True),
    ("6.5.2", "hello¢world".encode().hex(), True),
    ("6.5.3", "hello€world".encode().hex(), True),
    ("6.5.4", "hello\U00024b62world".encode().hex(), True),
    ("6.5.5", KOSME.hex(), True),
    # 6.6: "κόσμε" cut after every byte: valid only at code point boundaries.
    ("6.6.1", "ce", False),
    ("6.6.2", "ceba", True),
    ("6.6.3", "cebae1", False),
    ("6.6.4", "cebae1bd", False),
    ("6.6.5", "cebae1bdb9", True),
    ("6.6.6", "cebae1bdb9cf", False),
    ("6.6.7", "cebae1bdb9cf83", True),
    ("6.6.8", "cebae1bdb9cf83ce", False),
    ("6.6.9", "cebae1bdb9cf83cebc", True),
    ("6.6.10", "cebae1bdb9cf83cebcce", False),
    ("6.6.11", "cebae1bdb9cf83cebcceb5", True),
    # 6.7: the first code point of each length.
    ("6.7.1", "00", True),
    ("6.7.2", "c280", True),
    ("6.7.3", "e0a080", True),
    ("6.7.4", "f0908080", True),
    # 6.8: 5- and 6-byte forms, which UTF-8 no longer has.
    ("6.8.1", "f888808080", False),
    ("6.8.2", "fc8480808080", False),
    # 6.9: the last code point of each length.
    ("6.9.1", "7f", True),
    ("6.9.2", "dfbf", True),
    ("6.9.3", "efbfbf", True),
    ("6.9.4", "f48fbfbf", True),
    # 6.10: beyond U+10FFFF.
    ("6.10.1", "f7bfbfbf", False),
    ("6.10.2", "fbbfbfbfbf", False),
    ("6.10.3", "fdbfbfbfbfbf", False),
    # 6.11: other boundaries.
    ("6.11.1", "ed9fbf", True),
    ("6.11.2", "ee8080", True),
    ("6.11.3", "efbfbd", True),
    ("6.11.4", "f48fbfbf", True),
    ("6.11.5", "f4908080", False),
    # 6.12: continuation bytes with no start.
    ("6.12.1", "80", False),
    ("6.12.2", "bf", False),
    ("6.12.3", "80bf", False),
    ("6.12.4", "80bf80", False),
    ("6.12.5", "80bf80bf", False),
    ("6.12.6", "80bf80bf80", False),
    ("6.12.7", "80bf80bf80bf", False),
    ("6.12.8", bytes(range(0x80, 0xC0)).hex(), False),
    # 6.13: start bytes followed by a space.
    ("6.13.1", b"".join(bytes((b, 0x20)) for b in range(0xC0, 0xE0)).hex(), False),
    ("6.13.2", b"".join(bytes((b, 0x20)) for b in range(0xE0, 0xF0)).hex(), False),
    ("6.13.3", b"".join(bytes((b, 0x20)) for b in range(0xF0, 0xF8)).hex(), False),
    ("6.13.4", b"".join(bytes((b, 0x20)) for b in range(0xF8, 0xFC)).hex(), False),
    ("6.13.5", b"".join(bytes((b, 0x20)) for b in range(0xFC, 0xFE)).hex(), False),
    # 6.14: sequences missing their last continuation byte.
    ("6.14.1", "c0", False),
    ("6.14.2", "e080", False),
    ("6.14.3", "f08080", False),
    ("6.14.4", "f8808080", False),
    ("6.14.5", "fc80808080", False),
    ("6.14.6", "df", False),
    ("6.14.7", "efbf", False),
    ("6.14.8", "f7bfbf", False),
    ("6.14.9", "fbbfbfbf", False),
    ("6.14.10", "fdbfbfbfbf", False),
    # 6.15: all of 6.14 in a row.
    ("6.15.1", "c0e080f08080f8808080fc80808080dfefbff7bfbffbbfbfbffdbfbfbfbf", False),
    # 6.16: bytes that never occur in UTF-8.
    ("6.16.1", "fe", False),
    ("6.16.2", "ff", False),
    ("6.16.3", "fefeffff", False),
    # 6.17: overlong "/".
    ("6.17.1", "c0af", False),
    ("6.17.2", "e080af", False),
    ("6.17.3", "f08080af", False),
    ("6.17.4", "f8808080af", False),
    ("6.17.5", "fc80808080af", False),
    # 6.18: the largest overlong forms.
    ("6.18.1", "c1bf", False),
    ("6.18.2", "e09fbf", False),
    ("6.18.3", "f08fbfbf", False),
    ("6.18.4", "f887bfbfbf", False),
    ("6.18.5", "fc83bfbfbfbf", False),
    # 6.19: overlong NUL.
    ("6.19.1", "c080", False),
    ("6.19.2", "e08080", False),
    ("6.19.3", "f0808080", False),
    ("6.19.4", "f880808080", False),
    ("6.19.5", "fc8080808080", False),
    # 6.20: single UTF-16 surrogates.
    ("6.20.1", "eda080", False),
    ("6.20.2", "edadbf", False),
    ("6.20.3", "edae80", False),
    ("6.20.4", "edafbf", False),
    ("6.20.5", "edb080", False),
    ("6.20.6", "edbe80", False),
    ("6.20.7", "edbfbf", False),
    # 6.21: paired UTF-16 surrogates: still not UTF-8.
    ("6.21.1", "eda080edb080", False),
    ("6.21.2", "eda080edbfbf", False),
    ("6.21.3", "edadbfedb080", False),
    ("6.21.4", "edadbfedbfbf", False),
    ("6.21.5", "edae80edb080", False),
    ("6.21.6", "edae80edbfbf", False),
    ("6.21.7", "edafbfedb080", False),
    ("6.21.8", "edafbfedbfbf", False),
    # 6.22: noncharacters are valid UTF-8 (a sample).
    ("6.22.1", "efbfbe", True),
    ("6.22.2", "efbfbf", True),
    ("6.22.3", "f09fbfbe", True),
    ("6.22.34", "f48fbfbf", True),
    # 6.23: the replacement character and its neighbours are valid.
    ("6.23.1", "efbfb9", True),
    ("6.23.7", "efbfbd", True),
]


@pytest.mark.parametrize(
    ("payload", "valid"),
    [pytest.param(bytes.fromhex(h), valid, id=case) for case, h, valid in SAMPLES],
)
def test_case_6_sample(ws: Peer, payload: bytes, valid: bool) -> None:
    ws.send(masked_frame(OP_TEXT, payload))
    if valid:
        ws.expect_error("bad_json")  # valid UTF-8, not JSON: the connection stays open
        ws.expect_alive()
    else:
        ws.expect_close(1007)
