"""The Python floor of `unhidra-bench ml`: the worker's handlers called directly, in this one
process, with no socket. Run by the bench as `python -c <this file> <calls> <warmup> <devices>
<window>`; prints one JSON object on stdout.

Each case is timed twice: every call on its own (time.perf_counter_ns around it, which adds
roughly 0.1 µs) for the percentiles, and a tight loop of the same calls for the mean.
"""

import json
import platform
import sys
import time

from unhidra_ml.protocol import encode_frame
from unhidra_ml.worker import Worker

calls, warmup, devices, window = (int(a) for a in sys.argv[1:5])
worker = Worker()


def device(i):
    # The same ids as the Rust side: UUID-shaped, 36 characters.
    return f"00000000-0000-7000-8000-{i % devices:012x}"


def value(i):
    # The same values as the Rust side.
    return 20.0 + ((i * 7919) % 1000) / 100.0


# Every series starts full (the steady state), as in the bench's socket runs.
for d in range(devices):
    for k in range(window):
        worker.anomaly.score(device(d), "temperature", value(k * devices + d))

# Request bodies built once, as the server would have sent them (ids do not matter here).
variants = devices * 8
health_body = json.dumps({"id": 1, "op": "health", "payload": {}}, separators=(",", ":")).encode()
anomaly_payloads = [
    {"device_id": device(i), "metric": "temperature", "value": value(i), "ts": 1_700_000_000_000 + i}
    for i in range(variants)
]
anomaly_bodies = [
    json.dumps({"id": i + 1, "op": "anomaly.score", "payload": p}, separators=(",", ":")).encode()
    for i, p in enumerate(anomaly_payloads)
]


def health_handler(i):
    worker.op_health({})


def health_handle(i):
    encode_frame(worker.handle(health_body), worker.max_frame_bytes)


def anomaly_model(i):
    p = anomaly_payloads[i % variants]
    worker.anomaly.score(p["device_id"], p["metric"], p["value"])


def anomaly_handler(i):
    worker.op_anomaly_score(anomaly_payloads[i % variants])


def anomaly_handle(i):
    encode_frame(worker.handle(anomaly_bodies[i % variants]), worker.max_frame_bytes)


cases = [
    ("health", "handler", health_handler),
    ("health", "handle", health_handle),
    ("anomaly.score", "model", anomaly_model),
    ("anomaly.score", "handler", anomaly_handler),
    ("anomaly.score", "handle", anomaly_handle),
]

out = []
clock = time.perf_counter_ns
for op, level, fn in cases:
    for i in range(warmup):
        fn(i)
    samples = []
    for i in range(calls):
        t = clock()
        fn(i)
        samples.append(clock() - t)
    t = clock()
    for i in range(calls):
        fn(i)
    mean = (clock() - t) / calls
    samples.sort()

    def at(p):
        rank = max(1, -(-p * len(samples) // 100))
        return samples[rank - 1]

    out.append(
        {
            "op": op,
            "level": level,
            "calls": calls,
            "p50_ns": at(50),
            "p99_ns": at(99),
            "max_ns": samples[-1],
            "mean_ns": mean,
        }
    )

print(json.dumps({"python": platform.python_version(), "cases": out}))
