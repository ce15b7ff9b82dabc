"""The native MQTT listener seen by clients nobody here wrote: paho-mqtt (MQTT 3.1.1 and 5)
and Debian's mosquitto_pub / mosquitto_sub.

Each test talks to a real `unhidra serve --mqtt-listen 127.0.0.1:0` (the binary in
$UNHIDRA_BIN) with a fresh data dir. Devices are registered over REST; the MQTT username is
the device id and the password its key; topics are `unhidra/devices/{id}/...` with the JSON of
the WebSocket frames without `type` (see crates/proto/src/mqtt.rs). Every wait is bounded.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from test_gateway_client import Server, User, assert_exited_cleanly, start_server

WAIT = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="unhidra-mqtt-") as data_dir:
        running = start_server(Path(data_dir), ["--mqtt-listen", "127.0.0.1:0"])
        try:
            yield running
        finally:
            status = running.process.stop()
        assert_exited_cleanly(running, status)


@pytest.fixture(scope="module")
def owner(server: Server) -> User:
    return server.user("owner")


def mqtt_host_port(server: Server) -> tuple[str, int]:
    addr = server.process.mqtt_addr
    assert addr is not None
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def device(server: Server, owner: User, name: str) -> tuple[str, str]:
    status, body = server.request("POST", "/api/v1/devices", {"name": name}, token=owner.token)
    assert status == 201, (status, body)
    return body["device_id"], body["api_key"]


def topic(device_id: str, kind: str) -> str:
    return f"unhidra/devices/{device_id}/{kind}"


def stored_points(server: Server, owner: User, device_id: str, metric: str) -> int:
    now = int(time.time())
    path = (
        f"/api/v1/devices/{device_id}/telemetry?metric={metric}"
        f"&from={now - 3600}&to={now + 60}&bucket=3600"
    )
    status, body = server.request("GET", path, token=owner.token)
    assert status == 200, (status, body)
    return sum(bucket["count"] for bucket in body["buckets"])


def command(server: Server, owner: User, device_id: str, name: str) -> str:
    status, body = server.request(
        "POST", f"/api/v1/devices/{device_id}/commands", {"name": name}, token=owner.token
    )
    assert status == 202, (status, body)
    return str(body["id"])


def command_status(server: Server, owner: User, device_id: str, command_id: str) -> str:
    path = f"/api/v1/devices/{device_id}/commands/{command_id}"
    status, body = server.request("GET", path, token=owner.token)
    assert status == 200, (status, body)
    return str(body["status"])


class Paho:
    """A paho-mqtt client whose callbacks feed queues the test reads with timeouts."""

    def __init__(self, server: Server, device_id: str, key: str, version: MQTTProtocolVersion):
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.acks: queue.Queue[tuple[int, Any]] = queue.Queue()
        self.connected: queue.Queue[Any] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"paho-{device_id}", protocol=version
        )
        self.client.username_pw_set(device_id, key)
        self.client.on_connect = lambda c, u, flags, reason, props: self.connected.put(reason)
        self.client.on_message = lambda c, u, message: self.messages.put(message)
        self.client.on_publish = lambda c, u, mid, reason, props: self.acks.put((mid, reason))
        host, port = mqtt_host_port(server)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def wait_connected(self) -> Any:
        return self.connected.get(timeout=WAIT)

    def publish_qos1(self, topic_name: str, payload: dict[str, Any]) -> Any:
        """Publishes at QoS 1 and returns the PUBACK's reason (MQTT 5) once it arrives."""
        info = self.client.publish(topic_name, json.dumps(payload), qos=1)
        info.wait_for_publish(WAIT)
        assert info.is_published(), "no PUBACK"
        mid, reason = self.acks.get(timeout=WAIT)
        assert mid == info.mid
        return reason

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize(
    "version", [MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5], ids=["3.1.1", "5"]
)
def test_paho_device_sends_telemetry_and_answers_a_command(
    server: Server, owner: User, version: MQTTProtocolVersion
) -> None:
    device_id, key = device(server, owner, f"paho-{version.name}")
    queued = command(server, owner, device_id, "queued-before-connect")
    client = Paho(server, device_id, key, version)
    try:
        assert not client.wait_connected().is_failure
        result, _ = client.client.subscribe(topic(device_id, "commands"), qos=1)
        assert result == mqtt.MQTT_ERR_SUCCESS
        # The command queued while it was offline arrives first.
        message = client.messages.get(timeout=WAIT)
        assert message.topic == topic(device_id, "commands")
        assert json.loads(message.payload)["id"] == queued

        reason = client.publish_qos1(topic(device_id, "telemetry"), {"metrics": {"temp": 21.5}})
        if version == MQTTProtocolVersion.MQTTv5:
            assert reason == 0, reason
        # PUBACK means stored.
        assert stored_points(server, owner, device_id, "temp") == 1

        live = command(server, owner, device_id, "live")
        message = client.messages.get(timeout=WAIT)
        assert json.loads(message.payload) == {"id": live, "name": "live", "args": None}
        for answered in (queued, live):
            client.publish_qos1(topic(device_id, "results"), {"id": answered, "ok": True})
            assert command_status(server, owner, device_id, answered) == "completed"
    finally:
        client.close()


def test_paho_5_hears_why_a_publish_was_refused(server: Server, owner: User) -> None:
    device_id, key = device(server, owner, "paho-refused")
    other_id, _ = device(server, owner, "paho-other")
    client = Paho(server, device_id, key, MQTTProtocolVersion.MQTTv5)
    try:
        assert not client.wait_connected().is_failure
        reason = client.publish_qos1(topic(other_id, "telemetry"), {"metrics": {"t": 1}})
        assert reason == 135 and str(reason) == "Not authorized", reason
        reason = client.publish_qos1(topic(device_id, "telemetry"), {"metrics": {"bad name": 1}})
        assert reason == 153 and str(reason) == "Payload format invalid", reason
        assert stored_points(server, owner, other_id, "t") == 0
    finally:
        client.close()


def test_paho_is_refused_with_a_wrong_key(server: Server, owner: User) -> None:
    device_id, key = device(server, owner, "paho-wrong-key")
    client = Paho(server, device_id, key[:-1] + ("A" if key[-1] != "A" else "B"),
                  MQTTProtocolVersion.MQTTv5)
    try:
        reason = client.wait_connected()
        assert reason.is_failure and str(reason) == "Bad user name or password", reason
    finally:
        client.close()


MOSQUITTO_PUB = shutil.which("mosquitto_pub")
MOSQUITTO_SUB = shutil.which("mosquitto_sub")


def mosquitto(
    tool: str, server: Server, device_id: str, key: str, *args: str, wait: float = WAIT
) -> subprocess.CompletedProcess[str]:
    host, port = mqtt_host_port(server)
    return subprocess.run(
        [tool, "-h", host, "-p", str(port), "-u", device_id, "-P", key, *args],
        capture_output=True,
        text=True,
        timeout=wait + 5,
        check=False,
    )


def test_mosquitto_pub_and_sub(server: Server, owner: User) -> None:
    assert MOSQUITTO_PUB and MOSQUITTO_SUB, "run scripts/setup-mqtt-clients.sh"
    device_id, key = device(server, owner, "mosquitto")
    other_id, _ = device(server, owner, "mosquitto-other")

    payload = json.dumps({"metrics": {"hum": 40.5}})
    for version in ("mqttv311", "mqttv5"):
        done = mosquitto(
            "mosquitto_pub", server, device_id, key,
            "-V", version, "-q", "1", "-t", topic(device_id, "telemetry"), "-m", payload,
        )
        assert done.returncode == 0, done.stderr
        time.sleep(1.05)  # one reading per second: a second one at the same ts replaces it
    assert stored_points(server, owner, device_id, "hum") == 2

    # A wrong key is refused at CONNECT.
    done = mosquitto(
        "mosquitto_pub", server, device_id, key + "x",
        "-q", "1", "-t", topic(device_id, "telemetry"), "-m", payload,
    )
    assert done.returncode != 0
    assert "bad user name or password" in done.stderr.lower(), done.stderr

    # Another device's topic: MQTT 5 names the reason, and nothing is stored.
    done = mosquitto(
        "mosquitto_pub", server, device_id, key,
        "-V", "mqttv5", "-q", "1", "-t", topic(other_id, "telemetry"), "-m", payload,
    )
    assert "not authorized" in (done.stdout + done.stderr).lower(), done
    assert stored_points(server, owner, other_id, "hum") == 0

    # mosquitto_sub receives a command sent over REST.
    host, port = mqtt_host_port(server)
    sub = subprocess.Popen(
        [
            MOSQUITTO_SUB, "-h", host, "-p", str(port), "-u", device_id, "-P", key,
            "-q", "1", "-t", topic(device_id, "commands"), "-C", "1", "-W", str(int(WAIT)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Sent once the subscription is in place (the command waits in the store anyway,
        # and is delivered when the subscription arrives).
        command_id = command(server, owner, device_id, "beep")
        out, err = sub.communicate(timeout=WAIT + 5)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(5)
    assert sub.returncode == 0, err
    assert json.loads(out) == {"id": command_id, "name": "beep", "args": None}
