"""The request handling, in process: validation, error codes, the response size limit."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import pytest

import unhidra_ml
from unhidra_ml.anomaly import RobustZScore
from unhidra_ml.moderation import Moderator
from unhidra_ml.worker import Worker


@pytest.fixture(scope="module")
def moderator() -> Moderator:
    return Moderator()


@pytest.fixture
def worker(moderator: Moderator) -> Worker:
    return Worker(moderator=moderator)


def call(worker: Worker, request: Any) -> dict[str, Any]:
    body = request if isinstance(request, bytes) else json.dumps(request).encode()
    response = json.loads(worker.handle(body))
    assert isinstance(response, dict)
    return response


def score(device: Any = "d1", metric: Any = "temp", value: Any = 20.0, ts: Any = 1_700_000_000.5) -> dict[str, Any]:
    return {"device_id": device, "metric": metric, "value": value, "ts": ts}


def assert_error(response: dict[str, Any], request_id: Any, code: str) -> None:
    assert response["id"] == request_id
    assert response["ok"] is False
    assert response["error"]["code"] == code
    assert isinstance(response["error"]["message"], str) and response["error"]["message"]
    assert set(response) == {"id", "ok", "error"}


def test_health(worker: Worker) -> None:
    response = call(worker, {"id": "h", "op": "health", "payload": {}})
    assert response["ok"] is True
    result = response["result"]
    assert result["version"] == unhidra_ml.__version__
    assert result["models"] == [
        "anomaly.robust_z",
        "moderation.vader",
        "moderation.profanity_lexicon",
        "moderation.spam_heuristics",
    ]
    assert result["pid"] == os.getpid()
    assert isinstance(result["uptime_secs"], float) and result["uptime_secs"] >= 0


def test_anomaly_score(worker: Worker) -> None:
    first = call(worker, {"id": 1, "op": "anomaly.score", "payload": score()})
    assert first == {"id": 1, "ok": True, "result": {"score": 0.0, "is_anomaly": False, "baseline": None, "points": 0}}
    for i in range(20):
        call(worker, {"id": i, "op": "anomaly.score", "payload": score(value=20.0 + (i % 3) * 0.1, ts=i)})
    spike = call(worker, {"id": 2, "op": "anomaly.score", "payload": score(value=45)})["result"]
    assert spike["is_anomaly"] is True
    assert spike["score"] > 6
    assert spike["points"] == 21
    assert isinstance(spike["baseline"], float)


def test_moderation_score(worker: Worker) -> None:
    response = call(worker, {"id": "m", "op": "moderation.score", "payload": {"text": "you idiot"}})
    assert response["ok"] is True
    result = response["result"]
    assert set(result) == {"labels", "flagged", "reasons"}
    assert set(result["labels"]) == {"abuse", "spam", "sentiment"}
    assert result["flagged"] is True
    assert "abuse.insult" in result["reasons"]


@pytest.mark.parametrize("request_id", ["a", "", "é😀", 0, -5, 2**70])
def test_ids_are_echoed(worker: Worker, request_id: Any) -> None:
    assert call(worker, {"id": request_id, "op": "health", "payload": {}})["id"] == request_id


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"\xc3\x28",
        b"[]",
        b'{"id": 1, "op": "health", "payload": {}, "x": NaN}',
        json.dumps({"op": "health", "payload": {}}).encode(),
        json.dumps({"id": None, "op": "health", "payload": {}}).encode(),
        json.dumps({"id": 1.5, "op": "health", "payload": {}}).encode(),
        json.dumps({"id": True, "op": "health", "payload": {}}).encode(),
        json.dumps({"id": {"a": 1}, "op": "health", "payload": {}}).encode(),
    ],
)
def test_an_unreadable_id_gets_bad_request_with_id_null(worker: Worker, body: bytes) -> None:
    assert_error(call(worker, body), None, "bad_request")


@pytest.mark.parametrize(
    "request_",
    [
        {"id": 7, "payload": {}},
        {"id": 7, "op": 3, "payload": {}},
        {"id": 7, "op": "health"},
        {"id": 7, "op": "health", "payload": []},
        {"id": 7, "op": "health", "payload": None},
    ],
)
def test_a_bad_op_or_payload_gets_bad_request_with_the_id(worker: Worker, request_: dict[str, Any]) -> None:
    assert_error(call(worker, request_), 7, "bad_request")


def test_unknown_op(worker: Worker) -> None:
    assert_error(call(worker, {"id": "u", "op": "train.everything", "payload": {}}), "u", "unknown_op")


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {k: v for k, v in score().items() if k != "ts"},
        {k: v for k, v in score().items() if k != "device_id"},
        score(device=5),
        score(metric=None),
        score(device="d" * 257),
        score(value="20"),
        score(value=True),
        score(value=None),
        score(value=10**400),
        score(value=1e301),
        score(ts="now"),
        score(ts=None),
    ],
)
def test_bad_anomaly_payloads(worker: Worker, payload: dict[str, Any]) -> None:
    assert_error(call(worker, {"id": 9, "op": "anomaly.score", "payload": payload}), 9, "bad_request")
    assert len(worker.anomaly) == 0


@pytest.mark.parametrize(("key", "number"), [("value", "1e400"), ("value", "-1e400"), ("ts", "1e400")])
def test_numbers_beyond_a_double_are_refused(worker: Worker, key: str, number: str) -> None:
    # json.loads reads 1e400 as inf: the op must refuse it.
    payload = {"device_id": "d", "metric": "m", "value": 1.0, "ts": 1.0}
    text = json.dumps({"id": 9, "op": "anomaly.score", "payload": payload}).replace(f'"{key}": 1.0', f'"{key}": {number}')
    assert number in text
    assert_error(call(worker, text.encode()), 9, "bad_request")
    assert len(worker.anomaly) == 0


def test_nan_in_the_json_is_refused(worker: Worker) -> None:
    body = b'{"id": 9, "op": "anomaly.score", "payload": {"device_id": "d", "metric": "m", "value": NaN, "ts": 1}}'
    assert_error(call(worker, body), None, "bad_request")


def test_integer_values_are_numbers(worker: Worker) -> None:
    assert call(worker, {"id": 1, "op": "anomaly.score", "payload": score(value=20, ts=1_700_000_000)})["ok"]


@pytest.mark.parametrize("payload", [{}, {"text": 5}, {"text": None}, {"text": ["a"]}, {"text": "a" * 10_001}])
def test_bad_moderation_payloads(worker: Worker, payload: dict[str, Any]) -> None:
    assert_error(call(worker, {"id": 4, "op": "moderation.score", "payload": payload}), 4, "bad_request")


def test_text_of_exactly_the_limit_is_scored(worker: Worker) -> None:
    assert call(worker, {"id": 4, "op": "moderation.score", "payload": {"text": "ab " * 3333 + "c"}})["ok"]


def test_an_exception_in_a_model_is_internal_and_not_fatal(
    worker: Worker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "my private message about zebra-crossings"

    def broken(text: str) -> None:
        raise KeyError(text)

    monkeypatch.setattr(worker.moderator, "score", broken)
    with caplog.at_level(logging.ERROR, logger="unhidra_ml"):
        response = call(worker, {"id": "x", "op": "moderation.score", "payload": {"text": secret}})
    assert_error(response, "x", "internal")
    assert "zebra" not in response["error"]["message"]
    assert "KeyError" in caplog.text
    assert "zebra" not in caplog.text
    # The worker goes on.
    assert call(worker, {"id": "y", "op": "health", "payload": {}})["ok"] is True


def test_a_nan_from_a_model_is_internal(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(worker.ops, "health", lambda payload: {"x": float("nan")})
    assert_error(call(worker, {"id": 3, "op": "health", "payload": {}}), 3, "internal")


def test_a_response_above_the_limit_becomes_an_error(moderator: Moderator) -> None:
    worker = Worker(max_frame_bytes=1024, moderator=moderator, anomaly=RobustZScore())
    big = {"id": 1, "op": "health", "payload": {}}
    worker.ops["health"] = lambda payload: {"blob": "x" * 2000}
    response = worker.handle(json.dumps(big).encode())
    assert len(response) <= 1024
    assert_error(json.loads(response), 1, "internal")
    # An id so long that even the error response doesn't fit: the id becomes null.
    long_id = "i" * 1000
    response = worker.handle(json.dumps({"id": long_id, "op": "health", "payload": {}}).encode())
    assert len(response) <= 1024
    assert_error(json.loads(response), None, "internal")
