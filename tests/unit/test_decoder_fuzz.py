"""Property tests: the decoder returns a frame or a documented error, nothing else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import ErrorCode, ProtocolError, decode_client_frame
from protocol.messages import ChatRequest, JoinRequest, LeaveRequest, PingRequest
from tests.support.texts import assert_for_people

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

frame_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["join", "leave", "chat", "ping", "pong", "", "JOIN"])},
    optional={
        "payload": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "roomId": st.one_of(st.text(max_size=140), json_values),
                    "message": st.one_of(st.text(), json_values),
                },
            ),
        )
    },
)


def check(data: str | bytes) -> None:
    try:
        frame = decode_client_frame(data)
    except ProtocolError as exc:
        assert exc.code in ErrorCode
        assert_for_people(exc.message)
        return
    assert isinstance(frame, JoinRequest | LeaveRequest | ChatRequest | PingRequest)


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@settings(max_examples=400)
@given(json_values)
def test_arbitrary_json_values(value: Any) -> None:
    check(json.dumps(value))


@settings(max_examples=600)
@given(frame_like)
def test_frame_shaped_values(value: Any) -> None:
    check(json.dumps(value))
    check(json.dumps(value).encode())


@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    check(text)
