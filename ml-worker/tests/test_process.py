"""The worker as the server runs it: ``python -m unhidra_ml --connect <socket>`` against a
socket the test bound, speaking the framing over it."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from wire import WorkerProcess, frame, request_frame


def worker_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line]


def test_health(worker: WorkerProcess) -> None:
    response = worker.request("h1", "health", {})
    assert response["id"] == "h1"
    assert response["ok"] is True
    assert response["result"]["pid"] == worker.proc.pid
    assert "anomaly.robust_z" in response["result"]["models"]
    assert "moderation.vader" in response["result"]["models"]


def test_anomaly_score(worker: WorkerProcess) -> None:
    results = [
        worker.request(i, "anomaly.score", {"device_id": "dev", "metric": "t", "value": 20 + (i % 2) * 0.5, "ts": i})
        for i in range(30)
    ]
    assert all(r["ok"] for r in results)
    assert results[0]["result"]["baseline"] is None
    spike = worker.request("s", "anomaly.score", {"device_id": "dev", "metric": "t", "value": 99.0, "ts": 31.5})
    assert spike["result"]["is_anomaly"] is True
    assert spike["result"]["points"] == 30


def test_moderation_score_never_logs_the_text(worker: WorkerProcess) -> None:
    secret = "zebracrossing you fucking idiot"
    response = worker.request(5, "moderation.score", {"text": secret})
    assert response["result"]["flagged"] is True
    bad = worker.request(6, "moderation.score", {"text": "zebracrossing" * 1000})
    assert bad["error"]["code"] == "bad_request"
    worker.close()
    assert worker.wait() == 0
    assert "zebra" not in worker.stderr
    assert worker.stdout == b""


def test_pipelined_requests_are_answered_in_order(worker: WorkerProcess) -> None:
    ops: list[tuple[Any, str, dict[str, Any]]] = []
    for i in range(300):
        request_id: Any = f"req-{i}" if i % 2 else i
        kind = i % 4
        if kind == 0:
            ops.append((request_id, "health", {}))
        elif kind == 1:
            ops.append((request_id, "anomaly.score", {"device_id": "p", "metric": "m", "value": float(i), "ts": i}))
        elif kind == 2:
            ops.append((request_id, "moderation.score", {"text": f"message number {i}"}))
        else:
            ops.append((request_id, "no.such.op", {}))
    # All in one write: the worker sees them all buffered at once.
    worker.send_raw(b"".join(request_frame(*op) for op in ops))
    responses = [worker.recv() for _ in ops]
    assert [r["id"] for r in responses] == [op[0] for op in ops]
    for (_, op, _), response in zip(ops, responses):
        if op == "no.such.op":
            assert response["error"]["code"] == "unknown_op"
        else:
            assert response["ok"] is True


def test_malformed_json_gets_bad_request_with_id_null_and_the_worker_goes_on(worker: WorkerProcess) -> None:
    worker.send_raw(frame(b'{"id": 1, "op": "health", "payload": {'))
    worker.send_raw(frame(b"\xff\xfe"))
    worker.send("after", "health", {})
    for _ in range(2):
        response = worker.recv()
        assert response["id"] is None
        assert response["ok"] is False
        assert response["error"]["code"] == "bad_request"
    assert worker.recv()["id"] == "after"


def test_unknown_op(worker: WorkerProcess) -> None:
    response = worker.request(42, "anomaly.train", {})
    assert response == {"id": 42, "ok": False, "error": {"code": "unknown_op", "message": response["error"]["message"]}}


def test_an_oversized_length_exits_with_status_3(worker: WorkerProcess) -> None:
    assert worker.request(1, "health", {})["ok"]
    worker.send_raw(struct.pack(">I", 1_048_577))
    assert worker.wait() == 3
    refused = [line for line in worker_lines(worker.stderr) if "1048577" in line]
    assert len(refused) == 1
    assert worker.stdout == b""


def test_the_frame_limit_is_configurable(socket_dir: Path) -> None:
    worker = WorkerProcess.start(socket_dir, ["--max-frame-bytes", "2048"])
    try:
        # Exactly the limit is accepted (a valid request padded with spaces).
        body = json.dumps({"id": "big", "op": "health", "payload": {}}).encode()
        worker.send_raw(frame(body + b" " * (2048 - len(body))))
        assert worker.recv()["id"] == "big"
        worker.send_raw(struct.pack(">I", 2049) + b"{}")
        assert worker.wait() == 3
    finally:
        worker.kill()


def test_eof_exits_0(worker: WorkerProcess) -> None:
    assert worker.request(1, "health", {})["ok"]
    worker.close()
    assert worker.wait() == 0
    assert worker.stdout == b""


def test_eof_in_the_middle_of_a_frame_exits_0(worker: WorkerProcess) -> None:
    worker.send_raw(struct.pack(">I", 100) + b'{"id": 1')
    worker.close()
    assert worker.wait() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_exits_0(worker: WorkerProcess, signum: signal.Signals) -> None:
    assert worker.request(1, "health", {})["ok"]  # the handlers are installed by now
    worker.proc.send_signal(signum)
    assert worker.wait() == 0
    assert signum.name in worker.stderr
    assert worker.stdout == b""


def test_sigterm_mid_frame_exits_0(worker: WorkerProcess) -> None:
    assert worker.request(1, "health", {})["ok"]
    worker.send_raw(struct.pack(">I", 100) + b'{"id"')
    time.sleep(0.1)
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == 0


def run_without(module: str) -> subprocess.CompletedProcess[str]:
    """``python -m unhidra_ml --connect X`` with ``module`` made unimportable."""
    code = (
        "import runpy, sys\n"
        f"sys.modules[{module!r}] = None\n"
        "sys.argv = ['unhidra_ml', '--connect', '/nonexistent/worker.sock']\n"
        "runpy.run_module('unhidra_ml', run_name='__main__', alter_sys=True)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )


@pytest.mark.parametrize(("module", "package"), [("vaderSentiment", "vaderSentiment"), ("better_profanity", "better-profanity")])
def test_a_missing_dependency_exits_non_zero_at_once_naming_it(module: str, package: str) -> None:
    started = time.monotonic()
    result = run_without(module)
    assert time.monotonic() - started < 10
    assert result.returncode == 4
    assert result.stdout == ""
    lines = worker_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert f"missing package {package}" in lines[0]


def test_an_unreachable_socket_exits_1(socket_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "unhidra_ml", "--connect", str(socket_dir / "nothing.sock")],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert "cannot connect" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args", [[], ["--connect"], ["--connect", "x", "--max-frame-bytes", "10"]])
def test_a_bad_command_line_exits_2(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "unhidra_ml", *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 2
    assert result.stdout == ""
