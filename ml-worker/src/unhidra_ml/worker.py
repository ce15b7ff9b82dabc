"""The worker: connects to the server's Unix socket and answers requests until EOF.

Requests are answered one at a time, in the order received. A request that fails gets an
error response and the worker goes on; only a frame longer than the limit (which leaves
the stream unreadable) ends it, with status 3.

Exit statuses: 0 after EOF, SIGTERM or SIGINT; 1 when the socket can't be reached or on
an unexpected error; 2 for a bad command line; 3 for a frame above the limit; 4 (from
__main__) when a dependency is missing.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Final

from . import __version__
from .anomaly import MAX_ABS_VALUE, RobustZScore
from .anomaly import MODEL_NAME as ANOMALY_MODEL
from .moderation import MAX_TEXT_CHARS, Moderator
from .protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    MAX_ENCODABLE_BYTES,
    FrameReader,
    FrameTooLarge,
    MalformedMessage,
    TruncatedFrame,
    decode_message,
    encode_frame,
    encode_message,
)

log = logging.getLogger("unhidra_ml")

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_FRAME_TOO_LARGE: Final = 3

# Below this an error response might not fit in a frame.
MIN_FRAME_BYTES: Final = 1024
# Responses are sent when no whole request is buffered, or when this much is pending.
FLUSH_BYTES: Final = 256 * 1024
# Keys of anomaly series: bounded so that 100,000 series stay bounded too.
MAX_KEY_CHARS: Final = 256

JsonObject = dict[str, Any]


def _where(exc: BaseException) -> str:
    """file:line where ``exc`` was raised: logged instead of its message, which might
    quote its input (a user's message)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    return f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno or 0}"


class BadRequest(Exception):
    """The request is malformed; the message goes back to the server (never user text)."""


def _require_str(payload: JsonObject, key: str, max_chars: int) -> str:
    value = payload.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"payload.{key} must be a string")
    if len(value) > max_chars:
        raise BadRequest(f"payload.{key} is longer than {max_chars} characters")
    return value


def _require_number(payload: JsonObject, key: str) -> float:
    value = payload.get(key)
    # bool is an int in Python, but true is not a number in JSON.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"payload.{key} must be a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a double's range
        raise BadRequest(f"payload.{key} must be a finite number") from None
    if not math.isfinite(number):
        raise BadRequest(f"payload.{key} must be a finite number")
    return number


class Worker:
    """Turns one request frame's body into one response frame's body; never raises for a
    request (BaseException aside), so one bad request can't take the worker down."""

    def __init__(
        self,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        anomaly: RobustZScore | None = None,
        moderator: Moderator | None = None,
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.started = time.monotonic()
        self.anomaly = anomaly if anomaly is not None else RobustZScore()
        self.moderator = moderator if moderator is not None else Moderator()
        self.ops: dict[str, Callable[[JsonObject], JsonObject]] = {
            "health": self.op_health,
            "anomaly.score": self.op_anomaly_score,
            "moderation.score": self.op_moderation_score,
        }

    @property
    def models(self) -> list[str]:
        return [ANOMALY_MODEL, *self.moderator.names]

    def op_health(self, payload: JsonObject) -> JsonObject:
        return {
            "version": __version__,
            "models": self.models,
            "pid": os.getpid(),
            "uptime_secs": time.monotonic() - self.started,
        }

    def op_anomaly_score(self, payload: JsonObject) -> JsonObject:
        device_id = _require_str(payload, "device_id", MAX_KEY_CHARS)
        metric = _require_str(payload, "metric", MAX_KEY_CHARS)
        value = _require_number(payload, "value")
        _require_number(payload, "ts")
        if abs(value) > MAX_ABS_VALUE:
            raise BadRequest(f"payload.value must be of magnitude at most {MAX_ABS_VALUE:g}")
        result = self.anomaly.score(device_id, metric, value)
        return {
            "score": result.score,
            "is_anomaly": result.is_anomaly,
            "baseline": result.baseline,
            "points": result.points,
        }

    def op_moderation_score(self, payload: JsonObject) -> JsonObject:
        text = _require_str(payload, "text", MAX_TEXT_CHARS)
        result = self.moderator.score(text)
        return {
            "labels": {"abuse": result.abuse, "spam": result.spam, "sentiment": result.sentiment},
            "flagged": result.flagged,
            "reasons": list(result.reasons),
        }

    @staticmethod
    def _error(request_id: Any, code: str, message: str) -> JsonObject:
        return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}

    def respond(self, body: bytes) -> JsonObject:
        """The response object for one request frame's body."""
        try:
            request = decode_message(body)
        except MalformedMessage as exc:
            return self._error(None, "bad_request", str(exc))
        request_id = request.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, str | int):
            return self._error(None, "bad_request", "id must be a string or an integer")
        op = request.get("op")
        if not isinstance(op, str):
            return self._error(request_id, "bad_request", "op must be a string")
        payload = request.get("payload")
        if not isinstance(payload, dict):
            return self._error(request_id, "bad_request", "payload must be an object")
        handler = self.ops.get(op)
        if handler is None:
            # The op is the server's own constant, not user text: safe to name (shortened).
            return self._error(request_id, "unknown_op", f"unknown op {op[:64]!r}")
        try:
            result = handler(payload)
        except BadRequest as exc:
            return self._error(request_id, "bad_request", str(exc))
        except Exception as exc:
            # The exception's message could quote its input (a user's message): log and
            # return only its type and where it was raised.
            log.error("internal error in %s: %s at %s", op, type(exc).__name__, _where(exc))
            return self._error(request_id, "internal", f"{type(exc).__name__} in {op}")
        return {"id": request_id, "ok": True, "result": result}

    def handle(self, body: bytes) -> bytes:
        """The response frame's body for one request frame's body: never above the limit."""
        response = self.respond(body)
        try:
            encoded = encode_message(response)
        except (ValueError, TypeError) as exc:  # a NaN or a non-JSON value from a model
            log.error("response to a %s request could not be encoded: %s", _op_name(body), type(exc).__name__)
            response = self._error(response["id"], "internal", "the result could not be encoded as JSON")
            encoded = encode_message(response)
        if len(encoded) > self.max_frame_bytes:
            log.error("response of %d bytes is above the frame limit", len(encoded))
            message = f"the response ({len(encoded)} bytes) is above the frame limit ({self.max_frame_bytes} bytes)"
            encoded = encode_message(self._error(response["id"], "internal", message))
            if len(encoded) > self.max_frame_bytes:  # an id nearly as long as the limit
                encoded = encode_message(self._error(None, "internal", message))
        return encoded


def _op_name(body: bytes) -> str:
    try:
        op = decode_message(body).get("op")
    except MalformedMessage:
        return "malformed"
    return op[:64] if isinstance(op, str) else "malformed"


class _Stop(BaseException):
    """Raised by the signal handler: unwinds whatever the worker was doing."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    # A second signal while the worker unwinds must not interrupt its last log line.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT end the worker with status 0, wherever it is."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)


def serve(sock: socket.socket, worker: Worker) -> int:
    """Answers requests on ``sock`` until EOF; returns the exit status."""
    reader = FrameReader(sock, worker.max_frame_bytes)
    pending = bytearray()

    def flush() -> bool:
        try:
            sock.sendall(pending)
        except (BrokenPipeError, ConnectionResetError):
            log.info("the server closed the connection; exiting")
            return False
        pending.clear()
        return True

    while True:
        # Pipelined requests: answer all that are already here, then send the answers
        # together before waiting for more.
        if pending and (not reader.has_buffered_frame() or len(pending) >= FLUSH_BYTES):
            if not flush():
                return EXIT_OK
        try:
            body = reader.read_frame()
        except FrameTooLarge as exc:
            if pending:
                flush()
            log.error("refused a frame of %d bytes (limit %d bytes); exiting", exc.length, exc.limit)
            return EXIT_FRAME_TOO_LARGE
        except TruncatedFrame as exc:
            log.warning("the server closed the connection in the middle of a frame (%s); exiting", exc)
            return EXIT_OK
        if body is None:
            if pending:
                flush()
            log.info("the server closed the connection; exiting")
            return EXIT_OK
        pending += encode_frame(worker.handle(body), worker.max_frame_bytes)


def _frame_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not MIN_FRAME_BYTES <= value <= MAX_ENCODABLE_BYTES:
        raise argparse.ArgumentTypeError(f"must be between {MIN_FRAME_BYTES} and {MAX_ENCODABLE_BYTES}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m unhidra_ml",
        description="Unhidra's ML worker: connects to the server's Unix socket and answers its requests.",
    )
    parser.add_argument("--connect", required=True, metavar="PATH", help="the Unix socket the server listens on")
    parser.add_argument(
        "--max-frame-bytes",
        type=_frame_limit,
        default=DEFAULT_MAX_FRAME_BYTES,
        metavar="N",
        help=f"the largest frame accepted or sent (default {DEFAULT_MAX_FRAME_BYTES})",
    )
    return parser.parse_args(argv)


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("unhidra_ml[%(process)d] %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        install_signal_handlers()
        loaded = time.monotonic()
        worker = Worker(max_frame_bytes=args.max_frame_bytes)
        loaded = time.monotonic() - loaded
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(args.connect)
        except OSError as exc:
            log.error("cannot connect to %s: %s", args.connect, exc.strerror or type(exc).__name__)
            sock.close()
            return EXIT_ERROR
        log.info(
            "version %s connected to %s (models %s loaded in %.2f s, frames up to %d bytes)",
            __version__,
            args.connect,
            ", ".join(worker.models),
            loaded,
            args.max_frame_bytes,
        )
        with sock:
            return serve(sock, worker)
    except _Stop as stop:
        log.info("stopping on %s", stop.signame)
        return EXIT_OK
    except Exception as exc:
        log.error("unexpected %s at %s; exiting", type(exc).__name__, _where(exc))
        return EXIT_ERROR
