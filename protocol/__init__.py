"""Wire protocol v1: every byte that crosses a WebSocket or the broker is defined here."""

from protocol.codec import (
    ProtocolError,
    decode_client_frame,
    decode_server_frame,
    encode,
    encode_chat,
    encode_error,
    encode_joined,
    encode_left,
)
from protocol.errors import ErrorCode
from protocol.messages import (
    ChatMessage,
    ChatRequest,
    ClientFrame,
    Error,
    Joined,
    JoinRequest,
    LeaveRequest,
    Left,
    PingRequest,
    Pong,
    ServerFrame,
)

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "ClientFrame",
    "Error",
    "ErrorCode",
    "JoinRequest",
    "Joined",
    "LeaveRequest",
    "Left",
    "PingRequest",
    "Pong",
    "ProtocolError",
    "ServerFrame",
    "decode_client_frame",
    "decode_server_frame",
    "encode",
    "encode_chat",
    "encode_error",
    "encode_joined",
    "encode_left",
]
