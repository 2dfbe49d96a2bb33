"""How long a runaway execution holds the worker past its deadline (for
bench/sandbox_overhead.py).

One trial: the runaway model (tests/support/hostile_models.runaway_loop with a huge trip
count) is called with a deadline; ~10 ms later another model's request arrives and
queues behind it on the worker's one execution permit. Times are taken on the client
from just before the runaway's call: when its caller hears DEADLINE_EXCEEDED, when the
queued request completes (the worker is free again), and when the stopped model's
index row is READY again (its host restarted).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support import hostile_models
from tests.support.procs import wait_until
from tests.support.worker import WorkerProcess

LOOP = "runaway"
TRIPS = 10**12  # minutes of work: only the deadline ends it
QUEUE_AFTER_S = 0.010
# where the deadline comes from: Triton's `timeout` parameter (us), the gRPC deadline, the HTTP header
SOURCES = ("timeout parameter", "gRPC deadline", "HTTP header")
EXPECTED = {"timeout parameter": "StatusCode.DEADLINE_EXCEEDED", "gRPC deadline": "StatusCode.DEADLINE_EXCEEDED",
            "HTTP header": "504"}


@dataclass(frozen=True, slots=True)
class Trial:
    source: str
    deadline_ms: int
    caller_past_ms: float  # the runaway's caller got its error this long past the deadline
    held_past_ms: float  # the queued request completed this long past the deadline
    queued_wait_ms: float  # the queued request's own latency
    restart_ms: float  # from the caller's error until the stopped model is READY again
    status: str


def _loop_inputs(module, width: int) -> list:  # type: ignore[no-untyped-def]
    trips = module.InferInput("TRIPS", [1], "INT64")
    trips.set_data_from_numpy(np.array([TRIPS], np.int64))
    x = module.InferInput("INPUT0", [1, width], "FP32")
    x.set_data_from_numpy(np.full((1, width), 0.5, np.float32))
    return [trips, x]


class RunawayBench:
    def __init__(self, w: WorkerProcess, other: str, other_inputs: np.ndarray) -> None:
        self.w = w
        artifact = hostile_models.runaway_loop(LOOP).artifact
        self.grpc = grpcclient.InferenceServerClient(w.grpc_url)
        self.grpc.load_model(LOOP, config=json.dumps(artifact.config), files=artifact.files(),
                             headers=w.grpc_headers())
        self.http = httpclient.InferenceServerClient(w.http_url, network_timeout=60)
        width = hostile_models.LOOP_WIDTH
        self.grpc_in, self.http_in = _loop_inputs(grpcclient, width), _loop_inputs(httpclient, width)
        # the queued request goes on its own channel, as another tenant's would
        self.other_client = grpcclient.InferenceServerClient(w.grpc_url)
        other_in = grpcclient.InferInput("INPUT0", list(other_inputs.shape), "FP32")
        other_in.set_data_from_numpy(other_inputs)
        self.other = lambda: self.other_client.infer(other, [other_in], headers=w.grpc_headers())
        self.other()  # warm

    def close(self) -> None:
        for client in (self.grpc, self.http, self.other_client):
            client.close()

    def _ready(self) -> bool:
        rows = self.http.get_model_repository_index(headers=self.w.http_headers())
        return any(r["name"] == LOOP and r.get("state") == "READY" for r in rows)

    def _call(self, source: str, deadline_ms: int) -> None:
        headers = self.w.grpc_headers()
        if source == "timeout parameter":
            self.grpc.infer(LOOP, self.grpc_in, timeout=deadline_ms * 1000, headers=headers)
        elif source == "gRPC deadline":
            self.grpc.infer(LOOP, self.grpc_in, client_timeout=deadline_ms / 1000, headers=headers)
        else:
            self.http.infer(LOOP, self.http_in,
                            headers={**self.w.http_headers(), "inferplex-timeout-ms": str(deadline_ms)})

    def trial(self, source: str, deadline_ms: int) -> Trial:
        wait_until(self._ready, 60, "the runaway model READY", interval_s=0.005)
        clock = time.perf_counter
        queued: dict[str, float] = {}

        def queue_behind() -> None:
            queued["sent"] = clock()
            self.other()
            queued["done"] = clock()

        timer = threading.Timer(QUEUE_AFTER_S, queue_behind)
        t0 = clock()
        timer.start()
        status = "no error"
        try:
            self._call(source, deadline_ms)
        except InferenceServerException as exc:
            status = str(exc.status())
        t_err = clock()
        # the queued request first: polling the index meanwhile would load the worker it measures
        timer.join()
        wait_until(lambda: "done" in queued, 30, "the queued request", interval_s=0.001)
        wait_until(self._ready, 60, "the stopped model restarted", interval_s=0.002)
        t_ready = clock()
        deadline = t0 + deadline_ms / 1000
        return Trial(source, deadline_ms, (t_err - deadline) * 1e3, (queued["done"] - deadline) * 1e3,
                     (queued["done"] - queued["sent"]) * 1e3, (t_ready - t_err) * 1e3, status)


def run_trials(w: WorkerProcess, other: str, other_inputs: np.ndarray, deadlines_ms: tuple[int, ...],
               trials: int) -> list[Trial]:
    """``trials`` per (source, deadline), sources interleaved within each deadline."""
    bench = RunawayBench(w, other, other_inputs)
    try:
        out: list[Trial] = []
        for deadline_ms in deadlines_ms:
            for _ in range(trials):
                out += [bench.trial(source, deadline_ms) for source in SOURCES]
        bad = [t for t in out if t.status != EXPECTED[t.source]]
        if bad:
            raise RuntimeError(f"runaway calls did not end in DEADLINE_EXCEEDED / 504: {bad[:3]}")
        return out
    finally:
        bench.close()
