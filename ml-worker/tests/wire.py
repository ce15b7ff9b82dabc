"""The server's side of the worker protocol, for the tests: binds the socket, starts
``python -m unhidra_ml --connect``, and speaks the framing."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ACCEPT_TIMEOUT = 15.0
IO_TIMEOUT = 15.0


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def request_frame(request_id: Any, op: str, payload: Any) -> bytes:
    return frame(json.dumps({"id": request_id, "op": op, "payload": payload}).encode("utf-8"))


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], conn: socket.socket, logs: Path) -> None:
        self.proc = proc
        self.conn = conn
        self.logs = logs
        self._buf = b""

    @classmethod
    def start(cls, directory: Path, extra_args: Sequence[str] = ()) -> WorkerProcess:
        path = directory / "worker.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        os.chmod(path, 0o600)
        listener.listen(1)
        listener.settimeout(ACCEPT_TIMEOUT)
        with open(directory / "stdout", "wb") as out, open(directory / "stderr", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "unhidra_ml", "--connect", str(path), *extra_args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=directory,
            )
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            proc.kill()
            proc.wait()
            raise AssertionError(
                f"the worker did not connect: {(directory / 'stderr').read_text(errors='replace')}"
            ) from None
        finally:
            listener.close()
        conn.settimeout(IO_TIMEOUT)
        return cls(proc, conn, directory)

    @property
    def stdout(self) -> bytes:
        return (self.logs / "stdout").read_bytes()

    @property
    def stderr(self) -> str:
        return (self.logs / "stderr").read_text(errors="replace")

    def send_raw(self, data: bytes) -> None:
        self.conn.sendall(data)

    def send(self, request_id: Any, op: str, payload: Any) -> None:
        self.send_raw(request_frame(request_id, op, payload))

    def _read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise EOFError(f"the worker closed the connection; its stderr: {self.stderr}")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def recv(self) -> dict[str, Any]:
        (length,) = struct.unpack(">I", self._read_exactly(4))
        value = json.loads(self._read_exactly(length).decode("utf-8"))
        assert isinstance(value, dict)
        return value

    def request(self, request_id: Any, op: str, payload: Any) -> dict[str, Any]:
        self.send(request_id, op, payload)
        return self.recv()

    def close(self) -> None:
        self.conn.close()

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def wait_for_stderr(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            assert time.monotonic() < deadline, f"{text!r} not in the worker's stderr: {self.stderr}"
            time.sleep(0.02)

    def kill(self) -> None:
        self.conn.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
