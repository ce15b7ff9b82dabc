"""The WebSocket gateway seen by a client nobody here wrote: Python's `websockets`.

Each test talks to a real `unhidra serve` (the binary in $UNHIDRA_BIN, default
target/debug/unhidra; this suite builds nothing) on port 0 with a fresh data dir: accounts and
channels over REST with the standard library's urllib, then `unhidra.v1` over WebSocket with
the credential in the offered subprotocols (the wire types are in crates/proto/src/ws.rs).

Every wait is bounded, and every server started here is stopped with SIGTERM (then killed if
it hangs); it must exit 0.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

REPO = Path(__file__).resolve().parents[2]
PROTOCOL = "unhidra.v1"
PASSWORD = "correct horse battery staple"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
HTTP_TIMEOUT = 30.0
FRAME_TIMEOUT = 10.0

# Requests to 127.0.0.1 must not go through a proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerProcess:
    """A running `unhidra serve` whose output is read by background threads."""

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None) -> None:
        binary = Path(os.environ.get("UNHIDRA_BIN", "target/debug/unhidra"))
        if not binary.is_absolute():
            binary = REPO / binary
        if not binary.is_file():
            pytest.fail(f"no server binary at {binary}: cargo build -p unhidra, or set UNHIDRA_BIN")
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self.addr: str | None = None
        self.mqtt_addr: str | None = None
        self._want_mqtt = "--mqtt-listen" in (extra_args or [])
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNHIDRA_")}
        env["RUST_LOG"] = "info"
        self.process = subprocess.Popen(
            [
                str(binary),
                "serve",
                "--data-dir",
                str(data_dir),
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                *(extra_args or []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.process.stdout, self.process.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any) -> None:
        with stream:
            for raw in stream:
                self._take(raw)

    def _take(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        with self._lock:
            self.lines.append(line)
        # Log lines are JSON on stderr: {"fields": {"message": "API listening", "addr": ...}}.
        try:
            fields = json.loads(line).get("fields", {})
        except (ValueError, AttributeError):
            return
        if fields.get("message") == "MQTT listening" and "addr" in fields:
            self.mqtt_addr = fields["addr"]
        if fields.get("message") == "API listening" and "addr" in fields:
            # The MQTT listener (when asked for) logs before the API's.
            self.addr = fields["addr"]
            self._listening.set()

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_listening(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening.wait(0.1):
            if self.process.poll() is not None:
                status = self.process.returncode
                pytest.fail(f"unhidra serve exited with {status} before listening:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"unhidra serve did not log 'API listening' within {START_TIMEOUT}s:\n"
                    + self.output()
                )
        assert self.addr is not None
        if self._want_mqtt:
            assert self.mqtt_addr is not None, self.output()
        return self.addr

    def stop(self) -> int:
        """SIGTERM, then a bounded wait; SIGKILL if it hangs. Returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
            pytest.fail(
                f"unhidra serve did not exit within {STOP_TIMEOUT}s of SIGTERM:\n{self.output()}"
            )
        for reader in self._readers:
            reader.join(STOP_TIMEOUT)
        return status


@dataclass
class User:
    id: str
    token: str


class Server:
    """Typed helpers around one running server."""

    def __init__(self, process: ServerProcess, addr: str) -> None:
        self.process = process
        self.http_url = f"http://{addr}"
        self.ws_url = f"ws://{addr}/ws"

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with HTTP.open(req, timeout=HTTP_TIMEOUT) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        return status, (json.loads(raw) if raw else None)

    def user(self, username: str) -> User:
        """Registers `username` and logs in."""
        credentials = {"username": username, "password": PASSWORD}
        status, body = self.request("POST", "/api/v1/auth/register", credentials)
        assert status == 201, (status, body)
        user_id = body["user_id"]
        status, body = self.request("POST", "/api/v1/auth/login", credentials)
        assert status == 200, (status, body)
        assert body["token_type"] == "Bearer", body
        return User(id=user_id, token=body["access_token"])

    def channel(self, owner: User, name: str, members: list[User]) -> str:
        """A private channel of `owner` with `members` added."""
        status, body = self.request(
            "POST", "/api/v1/channels", {"name": name, "private": True}, token=owner.token
        )
        assert status == 201, (status, body)
        channel_id = body["id"]
        for member in members:
            path = f"/api/v1/channels/{channel_id}/members"
            status, body = self.request("POST", path, {"user_id": member.id}, token=owner.token)
            assert status == 204, (status, body)
        return channel_id

    def connect(self, token: str, protocols: list[str] | None = None) -> connect:
        offered = protocols if protocols is not None else [PROTOCOL, "bearer." + token]
        return connect(
            self.ws_url,
            subprotocols=[Subprotocol(p) for p in offered],
            open_timeout=FRAME_TIMEOUT,
            close_timeout=FRAME_TIMEOUT,
            proxy=None,
        )


def assert_exited_cleanly(server: Server, status: int) -> None:
    output = server.process.output()
    assert status == 0, f"unhidra serve exited with {status} on SIGTERM:\n{output}"


def start_server(data_dir: Path, extra_args: list[str] | None = None) -> Server:
    process = ServerProcess(data_dir, extra_args)
    try:
        return Server(process, process.wait_listening())
    except BaseException:
        process.stop()
        raise


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """One server for the module's tests (each test makes its own channels); it must exit 0
    on SIGTERM."""
    with tempfile.TemporaryDirectory(prefix="unhidra-py-") as data_dir:
        running = start_server(Path(data_dir))
        try:
            yield running
        finally:
            status = running.process.stop()
        assert_exited_cleanly(running, status)


@pytest.fixture(scope="module")
def alice(server: Server) -> User:
    return server.user("alice")


@pytest.fixture(scope="module")
def bob(server: Server) -> User:
    return server.user("bob")


# Frames sent as things happen (no seq, never replayed); these tests follow the timeline.
PASSING = {"presence", "typing", "receipt", "channel_added", "channel_removed", "device_state"}


async def recv_frame(ws: ClientConnection) -> dict[str, Any]:
    """The next frame, skipping passing frames such as presence."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT)
        assert isinstance(raw, str), f"expected a JSON text frame, got {raw!r}"
        frame = json.loads(raw)
        assert isinstance(frame, dict) and "type" in frame, frame
        if frame["type"] not in PASSING:
            return frame


async def expect(ws: ClientConnection, frame_type: str) -> dict[str, Any]:
    frame = await recv_frame(ws)
    assert frame["type"] == frame_type, f"expected a {frame_type!r} frame, got {frame}"
    return frame


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await asyncio.wait_for(ws.send(json.dumps(frame)), FRAME_TIMEOUT)


async def publish(ws: ClientConnection, channel: str, body: str, client_msg_id: str) -> None:
    frame = {"type": "publish", "channel": channel, "body": body, "client_msg_id": client_msg_id}
    await send(ws, frame)


async def welcomed(ws: ClientConnection, user: User) -> None:
    """The handshake chose exactly unhidra.v1 (never echoing the credential), and the first
    frame is the welcome naming the user."""
    assert ws.subprotocol == PROTOCOL
    assert ws.response is not None
    assert ws.response.headers.get_all("Sec-WebSocket-Protocol") == [PROTOCOL]
    welcome = await expect(ws, "welcome")
    assert welcome["principal"] == {"kind": "user", "id": user.id}, welcome
    assert welcome["connection_id"], welcome
    assert isinstance(welcome["max_message_bytes"], int), welcome
    assert welcome["max_message_bytes"] > 0, welcome


async def subscribe(ws: ClientConnection, channel: str) -> dict[str, Any]:
    await send(ws, {"type": "subscribe", "channel": channel})
    subscribed = await expect(ws, "subscribed")
    assert subscribed["channel"] == channel, subscribed
    return subscribed


def test_publish_reaches_a_subscriber_retries_are_acked_once_and_since_replays(
    server: Server, alice: User, bob: User
) -> None:
    channel = server.channel(alice, "python-chat", members=[bob])

    async def scenario() -> None:
        async with server.connect(alice.token) as a, server.connect(bob.token) as b:
            await welcomed(a, alice)
            await welcomed(b, bob)
            subscribed = await subscribe(b, channel)
            # Bob's joining is the channel's first event: seq 1.
            assert subscribed["seq"] == 1, subscribed

            await publish(a, channel, "hello from python", "py-1")
            ack = await expect(a, "ack")
            assert ack["client_msg_id"] == "py-1" and ack["seq"] == 2, ack
            assert ack["id"] and ack["ts"], ack
            message = await expect(b, "message")
            assert message == {
                "type": "message",
                "channel": channel,
                "id": ack["id"],
                "seq": 2,
                "sender": alice.id,
                "body": "hello from python",
                "client_msg_id": "py-1",
                "ts": ack["ts"],
                "reply_count": 0,
                "last_reply_at": None,
            }

            # A retry of the same publish is the same stored message, not a new one.
            await publish(a, channel, "hello from python", "py-1")
            retry = await expect(a, "ack")
            assert retry["client_msg_id"] == "py-1", retry
            assert (retry["id"], retry["seq"]) == (ack["id"], 2), retry

            # So the next publish takes seq 3, and it is the next thing the subscriber sees.
            await publish(a, channel, "second", "py-2")
            second = await expect(a, "ack")
            assert (second["client_msg_id"], second["seq"]) == ("py-2", 3), second
            message = await expect(b, "message")
            assert (message["seq"], message["body"]) == (3, "second"), message
            assert message["id"] == second["id"], message

        # A new connection catches up with `since`: the channel's timeline after it (bob's
        # joining, then the messages), in order, then `subscribed` at the last seq.
        async with server.connect(bob.token) as b2:
            await welcomed(b2, bob)
            await send(b2, {"type": "subscribe", "channel": channel, "since": 0})
            joined = await expect(b2, "member_joined")
            assert (joined["seq"], joined["user"], joined["by"]) == (1, bob.id, alice.id), joined
            replayed = [await expect(b2, "message"), await expect(b2, "message")]
            assert [(m["seq"], m["body"], m["sender"]) for m in replayed] == [
                (2, "hello from python", alice.id),
                (3, "second", alice.id),
            ]
            subscribed = await expect(b2, "subscribed")
            assert (subscribed["channel"], subscribed["seq"]) == (channel, 3), subscribed

            await send(b2, {"type": "unsubscribe", "channel": channel})
            await expect(b2, "unsubscribed")
            await send(b2, {"type": "subscribe", "channel": channel, "since": 2})
            message = await expect(b2, "message")
            assert (message["seq"], message["body"]) == (3, "second"), message
            subscribed = await expect(b2, "subscribed")
            assert subscribed["seq"] == 3, subscribed

            await send(b2, {"type": "ping"})
            assert await expect(b2, "pong") == {"type": "pong"}

    asyncio.run(scenario())


def test_a_non_member_can_neither_subscribe_nor_publish(
    server: Server, alice: User, bob: User
) -> None:
    channel = server.channel(alice, "alice-only", members=[])

    async def scenario() -> None:
        async with server.connect(bob.token) as b:
            await welcomed(b, bob)
            await send(b, {"type": "subscribe", "channel": channel})
            error = await expect(b, "error")
            assert (error["code"], error["ref"]) == ("forbidden", channel), error
            await publish(b, channel, "let me in", "py-x")
            error = await expect(b, "error")
            assert (error["code"], error["ref"]) == ("forbidden", "py-x"), error
            # Refusals do not end the connection.
            await send(b, {"type": "ping"})
            await expect(b, "pong")

    asyncio.run(scenario())


def test_a_malformed_frame_is_answered_with_an_error(server: Server, alice: User) -> None:
    async def scenario() -> None:
        async with server.connect(alice.token) as a:
            await welcomed(a, alice)
            await a.send("not json")
            error = await expect(a, "error")
            assert error["code"] == "invalid_json", error
            await send(a, {"type": "ping", "extra": 1})
            error = await expect(a, "error")
            assert error["code"] == "invalid_json", error
            await send(a, {"type": "ping"})
            await expect(a, "pong")

    asyncio.run(scenario())


def tampered(token: str) -> str:
    """The token with one signature byte changed (a middle character, so no padding bits)."""
    header, claims, signature = token.split(".")
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"
    forged = signature[:middle] + swapped + signature[middle + 1 :]
    assert base64.urlsafe_b64decode(forged + "==") != base64.urlsafe_b64decode(signature + "==")
    return f"{header}.{claims}.{forged}"


@pytest.mark.parametrize(
    ("offered", "status", "code"),
    [
        pytest.param(lambda t: [PROTOCOL, "bearer.not-a-jwt"], 401, "unauthorized", id="garbage"),
        pytest.param(
            lambda t: [PROTOCOL, "bearer." + tampered(t)], 401, "unauthorized", id="tampered"
        ),
        pytest.param(lambda t: [PROTOCOL], 401, "unauthorized", id="no-credential"),
        pytest.param(lambda t: ["bearer." + t], 400, "bad_request", id="no-unhidra.v1"),
    ],
)
def test_a_bad_handshake_is_refused_before_the_upgrade(
    server: Server, alice: User, offered: Any, status: int, code: str
) -> None:
    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with server.connect(alice.token, protocols=offered(alice.token)):
                pass
        response = refused.value.response
        assert response.status_code == status, response
        assert json.loads(response.body)["error"]["code"] == code, response.body
        if status == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            assert challenge.startswith("Bearer"), response.headers

    asyncio.run(scenario())


def test_sigterm_closes_open_sockets_with_1001_and_exits_0() -> None:
    with tempfile.TemporaryDirectory(prefix="unhidra-py-") as data_dir:
        running = start_server(Path(data_dir))
        try:
            carol = running.user("carol")

            async def scenario() -> None:
                async with running.connect(carol.token) as ws:
                    await welcomed(ws, carol)
                    running.process.process.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(ws.wait_closed(), STOP_TIMEOUT)
                    assert ws.close_code == 1001, (ws.close_code, ws.close_reason)

            asyncio.run(scenario())
        finally:
            status = running.process.stop()
        assert_exited_cleanly(running, status)
