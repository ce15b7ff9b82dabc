"""The framing: 4-byte big-endian length + UTF-8 JSON, with a limit both ways."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from unhidra_ml.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    FrameReader,
    FrameTooLarge,
    MalformedMessage,
    TruncatedFrame,
    decode_message,
    encode_frame,
    encode_message,
)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.settimeout(5)
    b.settimeout(5)
    with a, b:
        yield a, b


def test_default_limit_is_one_mebibyte() -> None:
    assert DEFAULT_MAX_FRAME_BYTES == 1_048_576


def test_encode_frame_prefixes_the_big_endian_length() -> None:
    assert encode_frame(b'{"a":1}') == b'\x00\x00\x00\x07{"a":1}'
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert encode_frame(b"x" * 300)[:4] == b"\x00\x00\x01\x2c"


def test_encode_frame_refuses_a_body_above_the_limit() -> None:
    assert len(encode_frame(b"x" * 100, max_frame_bytes=100)) == 104
    with pytest.raises(FrameTooLarge) as err:
        encode_frame(b"x" * 101, max_frame_bytes=100)
    assert (err.value.length, err.value.limit) == (101, 100)


def test_reader_reads_frames_split_and_coalesced(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    reader = FrameReader(b, max_frame_bytes=1024)
    stream = encode_frame(b"first") + encode_frame(b"") + encode_frame(b"third" * 10)
    a.sendall(stream[:2])
    a.sendall(stream[2:9])
    a.sendall(stream[9:])
    assert reader.read_frame() == b"first"
    assert reader.has_buffered_frame()
    assert reader.read_frame() == b""
    assert reader.read_frame() == b"third" * 10
    assert not reader.has_buffered_frame()
    a.shutdown(socket.SHUT_WR)
    assert reader.read_frame() is None


def test_reader_accepts_a_frame_of_exactly_the_limit(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(encode_frame(b"y" * 1024, max_frame_bytes=1024))
    assert FrameReader(b, max_frame_bytes=1024).read_frame() == b"y" * 1024


def test_reader_refuses_a_length_above_the_limit_before_its_body(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    # Only the header is sent: the reader must not wait for a body it will refuse.
    a.sendall(struct.pack(">I", 1025))
    reader = FrameReader(b, max_frame_bytes=1024)
    with pytest.raises(FrameTooLarge) as err:
        reader.read_frame()
    assert (err.value.length, err.value.limit) == (1025, 1024)


def test_reader_refuses_the_largest_u32(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(b"\xff\xff\xff\xff")
    with pytest.raises(FrameTooLarge):
        FrameReader(b).read_frame()


@pytest.mark.parametrize("sent", [b"\x00\x00", b"\x00\x00\x00\x05ab"])
def test_reader_reports_a_stream_that_ends_mid_frame(
    pair: tuple[socket.socket, socket.socket], sent: bytes
) -> None:
    a, b = pair
    a.sendall(sent)
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(TruncatedFrame):
        FrameReader(b).read_frame()


def test_reader_returns_none_at_eof_between_frames(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.shutdown(socket.SHUT_WR)
    assert FrameReader(b).read_frame() is None


def test_decode_message_accepts_a_json_object() -> None:
    assert decode_message('{"id": "é", "n": 1e2}'.encode()) == {"id": "é", "n": 100.0}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"\xff\xfe{}",
        b"[1, 2]",
        b'"text"',
        b"null",
        b'{"value": NaN}',
        b'{"value": Infinity}',
        b'{"value": -Infinity}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"id": ' + b"9" * 5000 + b"}",
    ],
)
def test_decode_message_refuses_anything_but_a_json_object(body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_message(body)


def test_encode_message_is_compact_ascii_json() -> None:
    assert encode_message({"id": "é", "ok": True}) == b'{"id":"\\u00e9","ok":true}'
    # A lone surrogate (valid in a JSON string, not in UTF-8) still encodes.
    assert encode_message({"id": "\ud800"}) == b'{"id":"\\ud800"}'


def test_encode_message_refuses_nan() -> None:
    with pytest.raises(ValueError):
        encode_message({"score": float("nan")})
