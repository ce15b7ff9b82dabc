"""Posts messages for scripts/ci-schemathesis.sh, so that the message routes reach a real
message: messages are published over the WebSocket only (docs/protocol.md), with Python's
websockets from .venv (scripts/setup-python.sh).

Usage: seed_messages.py WS_URL TOKEN CHANNEL_ID BODY...; prints the message ids, one a line.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

TIMEOUT = 10.0


async def publish(ws_url: str, token: str, channel: str, bodies: list[str]) -> list[str]:
    offered = [Subprotocol("unhidra.v1"), Subprotocol("bearer." + token)]
    ids: list[str] = []
    async with connect(ws_url, subprotocols=offered, open_timeout=TIMEOUT, proxy=None) as ws:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert welcome["type"] == "welcome", welcome
        for n, body in enumerate(bodies):
            frame = {"type": "publish", "channel": channel, "body": body, "client_msg_id": f"seed-{n}"}
            await ws.send(json.dumps(frame))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                if reply["type"] == "ack":
                    ids.append(reply["id"])
                    break
                assert reply["type"] != "error", reply
    return ids


def main() -> None:
    ws_url, token, channel, *bodies = sys.argv[1:]
    for message_id in asyncio.run(publish(ws_url, token, channel, bodies)):
        print(message_id)


if __name__ == "__main__":
    main()
