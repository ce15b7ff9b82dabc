"""Framing on the worker's socket.

Each frame is a 4-byte big-endian unsigned length, then that many bytes of UTF-8 JSON.
Frames above the limit are refused in both directions: a length above the limit can't be
skipped safely (the stream can't be resynchronised), so the reader raises FrameTooLarge
and the worker exits; the writer never produces a frame above the limit.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any, Final

HEADER: Final = struct.Struct(">I")
HEADER_BYTES: Final = HEADER.size
DEFAULT_MAX_FRAME_BYTES: Final = 1_048_576
# The length field is a u32: no frame can be longer than this, whatever the limit says.
MAX_ENCODABLE_BYTES: Final = 0xFFFF_FFFF
RECV_CHUNK: Final = 65_536


class FrameTooLarge(Exception):
    """A frame's length is above the limit."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes is above the limit of {limit} bytes")
        self.length = length
        self.limit = limit


class TruncatedFrame(Exception):
    """The peer closed the connection in the middle of a frame."""

    def __init__(self, have: int, want: int) -> None:
        super().__init__(f"connection closed after {have} of {want} bytes of a frame")
        self.have = have
        self.want = want


class MalformedMessage(Exception):
    """A frame's body is not a UTF-8 JSON object."""


def encode_frame(body: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """The frame (header and body) for ``body``; FrameTooLarge if it is above the limit."""
    limit = min(max_frame_bytes, MAX_ENCODABLE_BYTES)
    if len(body) > limit:
        raise FrameTooLarge(len(body), limit)
    return HEADER.pack(len(body)) + body


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN, Infinity and -Infinity by default: they are not JSON.
    raise ValueError(f"{name} is not valid JSON")


def decode_message(body: bytes) -> dict[str, Any]:
    """A frame's body as a JSON object; MalformedMessage if it is anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessage("the frame is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    # ValueError covers JSONDecodeError, the constants above and integers too long to
    # parse; RecursionError covers absurdly deep nesting.
    except (ValueError, RecursionError):
        raise MalformedMessage("the frame is not valid JSON") from None
    if not isinstance(value, dict):
        raise MalformedMessage("the frame is not a JSON object")
    return value


def encode_message(message: dict[str, Any]) -> bytes:
    """Compact JSON, ASCII only (so any string, even a lone surrogate, encodes); no NaN."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("ascii")


class FrameReader:
    """Reads frames from a connected stream socket, buffering what arrives ahead."""

    def __init__(self, sock: socket.socket, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._sock = sock
        self._max = max_frame_bytes
        self._buf = bytearray()

    def _pending_length(self) -> int | None:
        """The length of the next frame if its header is buffered; FrameTooLarge if too long."""
        if len(self._buf) < HEADER_BYTES:
            return None
        (length,) = HEADER.unpack_from(self._buf)
        if length > self._max:
            raise FrameTooLarge(length, self._max)
        return int(length)

    def has_buffered_frame(self) -> bool:
        """Whether a whole frame is already buffered (read_frame won't block)."""
        try:
            length = self._pending_length()
        except FrameTooLarge:
            return True  # read_frame raises at once: it doesn't block either
        return length is not None and len(self._buf) >= HEADER_BYTES + length

    def _fill(self) -> bool:
        """Reads what is available (blocking); False at end of stream."""
        try:
            chunk = self._sock.recv(RECV_CHUNK)
        except ConnectionResetError:
            return False
        if not chunk:
            return False
        self._buf += chunk
        return True

    def read_frame(self) -> bytes | None:
        """The next frame's body; None when the peer closed the stream between frames.

        Raises FrameTooLarge as soon as a header above the limit arrives (before its
        body), and TruncatedFrame when the stream ends in the middle of a frame.
        """
        while True:
            length = self._pending_length()
            if length is not None and len(self._buf) >= HEADER_BYTES + length:
                body = bytes(self._buf[HEADER_BYTES : HEADER_BYTES + length])
                del self._buf[: HEADER_BYTES + length]
                return body
            if not self._fill():
                if not self._buf:
                    return None
                want = HEADER_BYTES + length if length is not None else HEADER_BYTES
                raise TruncatedFrame(len(self._buf), want)
