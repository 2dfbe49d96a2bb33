"""Overhead of the worker's protocol path: tritonclient (HTTP, gRPC) against a real
``inferplex worker`` versus calling the same runtime in-process.

Run: ``.venv/bin/python -m bench.worker_overhead`` (about a minute). Writes
``bench/results/worker_overhead.md`` and ``.png``. Paths are measured in interleaved
rounds so they share the machine's noise; one client, sequential requests, and the
worker and the in-process runtime both use one intra-op thread. Two workers run:
the default (``--grpc-server threads``) serves HTTP and gRPC, a second one with
``--grpc-server aio`` serves the "gRPC (aio server)" path for comparison. Both restrict
every API but health to a credential, as ``inferplex up`` starts its workers, and every
inference sends it (``--open-workers``: neither, for a before/after of its cost).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from bench._common import pyplot
from kserve.restricted import DEFAULT_KEY, InstanceCredential
from modelfiles import config as cfg
from tests.support import models
from tests.support.procs import Proc, free_port, inferplex_cmd, port_open, wait_until
from worker.runtimes import open_runtime

RESULTS = Path(__file__).resolve().parent / "results"
PATHS = ("in-process", "HTTP", "gRPC", "gRPC (aio server)", "gRPC no-op")
CREDENTIAL = InstanceCredential(DEFAULT_KEY, "bench-instance-secret-0123456789abcdef")


@dataclass(frozen=True)
class Workload:
    model: str  # key in tests.support.models.BUILDERS
    batch: int
    requests_per_round: int

    @property
    def label(self) -> str:
        return f"{self.model} batch {self.batch}"


WORKLOADS = (Workload("mlp", 1, 300), Workload("cnn", 8, 40))


@dataclass
class Samples:
    latencies_s: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PATHS})


def _inputs(workload: Workload) -> np.ndarray:
    shape = {"mlp": (64,), "cnn": (3, 32, 32)}[workload.model]
    return np.random.default_rng(0).standard_normal((workload.batch, *shape)).astype(np.float32)


def _callers(workload: Workload, worker_http: str, worker_grpc: str, aio_grpc: str,
             workdir: Path, credential: InstanceCredential | None) -> dict[str, Callable[[], object]]:
    art = models.BUILDERS[workload.model](workload.model)
    x = _inputs(workload)
    # in-process: the worker's own runtime class on the same file, same thread count
    path = workdir / workload.model / art.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(art.data)
    config = cfg.parse_json(art.config, workload.model)
    cfg.resolve_platform(config, None)
    spec = cfg.spec_of(config)
    runtime = open_runtime(path, spec, "cpu", 1)
    outputs = [t.name for t in spec.outputs]

    http = httpclient.InferenceServerClient(worker_http)
    http_in = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
    http_in.set_data_from_numpy(x)
    http_out = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)]
    grpc = grpcclient.InferenceServerClient(worker_grpc)
    grpc_in = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    grpc_in.set_data_from_numpy(x)
    aio = grpcclient.InferenceServerClient(aio_grpc)

    hh = credential.http_headers() if credential else None
    gh = credential.grpc_headers() if credential else None

    expected = runtime.run({"INPUT0": x}, outputs)["OUTPUT0"]
    got = http.infer(workload.model, [http_in], outputs=http_out, headers=hh).as_numpy("OUTPUT0")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)  # same model, same answer
    return {
        "in-process": lambda: runtime.run({"INPUT0": x}, outputs),
        "HTTP": lambda: http.infer(workload.model, [http_in], outputs=http_out, headers=hh),
        "gRPC": lambda: grpc.infer(workload.model, [grpc_in], headers=gh),
        "gRPC (aio server)": lambda: aio.infer(workload.model, [grpc_in], headers=gh),
        "gRPC no-op": grpc.is_server_live,
    }


def _measure(call: Callable[[], object], n: int, into: list[float]) -> None:
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        call()
        into.append(clock() - t0)


def _stats(lat: list[float], batch: int) -> dict[str, float]:
    arr = np.array(lat) * 1e3
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "req_per_s": float(len(arr) / (arr.sum() / 1e3)),
            "inf_per_s": float(batch * len(arr) / (arr.sum() / 1e3)), "n": len(arr)}


def run(rounds: int, credential: InstanceCredential | None = CREDENTIAL) -> dict[str, dict[str, dict[str, float]]]:
    workdir = Path(tempfile.mkdtemp(prefix="inferplex-bench-"))
    env = {"INFERPLEX_INSTANCE_RESTRICTED_KEY": credential.key,
           "INFERPLEX_INSTANCE_RESTRICTED_VALUE": credential.value} if credential else None
    gh = credential.grpc_headers() if credential else None
    procs: list[Proc] = []
    grpc_urls: list[str] = []
    try:
        for mode in ("threads", "aio"):
            http_port, grpc_port = free_port(), free_port()
            proc = Proc(inferplex_cmd("--log-level", "WARNING", "worker", "--http-port", str(http_port),
                                      "--grpc-port", str(grpc_port), "--threads", "1", "--grpc-server", mode),
                        workdir / f"worker-{mode}.log", env=env)
            procs.append(proc)
            proc.wait_ready(lambda h=http_port, g=grpc_port: port_open(h) and port_open(g), 60, "worker")
            if mode == "threads":
                http_url = f"127.0.0.1:{http_port}"
            grpc_urls.append(f"127.0.0.1:{grpc_port}")
            with grpcclient.InferenceServerClient(grpc_urls[-1]) as client:
                wait_until(client.is_server_ready, 30, "worker ready")
                for w in WORKLOADS:
                    config, files = models.model_files(w.model)
                    client.load_model(w.model, config=json.dumps(config), files=files, headers=gh)
        callers = {w: _callers(w, http_url, grpc_urls[0], grpc_urls[1], workdir, credential) for w in WORKLOADS}
        samples = {w: Samples() for w in WORKLOADS}
        for w in WORKLOADS:  # warm-up, not recorded
            for call in callers[w].values():
                _measure(call, max(20, w.requests_per_round // 5), [])
        for _ in range(rounds):
            for w in WORKLOADS:
                for name in PATHS:
                    _measure(callers[w][name], w.requests_per_round, samples[w].latencies_s[name])
        return {w.label: {p: _stats(samples[w].latencies_s[p], w.batch) for p in PATHS} for w in WORKLOADS}
    finally:
        for proc in procs:
            proc.stop()


def write_markdown(results: dict[str, dict[str, dict[str, float]]], rounds: int, seconds: float,
                   restricted: bool = True) -> str:
    lines = [
        "# Worker protocol overhead",
        "",
        "`.venv/bin/python -m bench.worker_overhead` — one sequential client; the worker "
        "(`inferplex worker --threads 1`) and the in-process runtime (the worker's own runtime class "
        "on the same file) each use one intra-op thread. Paths interleaved in "
        f"{rounds} rounds. Machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}; run took {seconds:.0f} s. Workers "
        + ("restrict every API but health (the credential rides on every request), as `inferplex up`'s do."
           if restricted else "open (`--open-workers`: no restricted APIs, no credential)."),
        "",
        "| workload | path | n | p50 ms | p99 ms | req/s | inferences/s | p50 added vs in-process | p50 ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, by_path in results.items():
        base = by_path["in-process"]["p50_ms"]
        for path, s in by_path.items():
            added = s["p50_ms"] - base
            lines.append(f"| {label} | {path} | {s['n']} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | "
                         f"{s['req_per_s']:.0f} | {s['inf_per_s']:.0f} | "
                         f"{'—' if path == 'in-process' else f'+{added:.3f} ms'} | {s['p50_ms'] / base:.2f}x |")
    mlp = results[WORKLOADS[0].label]
    worst = max(mlp["HTTP"]["p50_ms"], mlp["gRPC"]["p50_ms"]) - mlp["in-process"]["p50_ms"]
    lines += ["", f"Target: the protocol path adds < 0.5 ms at p50 for the MLP. Measured: "
              f"+{mlp['HTTP']['p50_ms'] - mlp['in-process']['p50_ms']:.3f} ms (HTTP), "
              f"+{mlp['gRPC']['p50_ms'] - mlp['in-process']['p50_ms']:.3f} ms (gRPC): "
              f"{'met' if worst < 0.5 else 'NOT met'}.",
              "",
              "Client and worker share the same 2 cores (and whatever else runs there), so p99 is "
              "mostly scheduling noise. \"gRPC\" is the default sync server (its handler threads run "
              "the batch under the executor's one-batch permit); \"gRPC (aio server)\" is "
              "`--grpc-server aio`, which hops from the event loop to the executor thread. "
              "\"gRPC no-op\" is tritonclient's `is_server_live()` against the default server: the "
              "round trip with no inference work at all, i.e. the floor of the gRPC path.", ""]
    return "\n".join(lines)


def write_plot(results: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4))
    for ax, (label, by_path) in zip(np.atleast_1d(axes), results.items(), strict=True):
        xs = np.arange(len(PATHS))
        ax.bar(xs - 0.2, [by_path[p]["p50_ms"] for p in PATHS], 0.4, label="p50")
        ax.bar(xs + 0.2, [by_path[p]["p99_ms"] for p in PATHS], 0.4, label="p99")
        ax.set_xticks(xs, PATHS)
        ax.set_ylabel("latency (ms)")
        ax.set_title(label)
        ax.legend()
    fig.suptitle("inferplex worker: protocol path vs in-process runtime")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--open-workers", action="store_true",
                        help="workers without restricted APIs, requests without the credential")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    results = run(args.rounds, None if args.open_workers else CREDENTIAL)
    seconds = time.monotonic() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    md = write_markdown(results, args.rounds, seconds, restricted=not args.open_workers)
    (RESULTS / "worker_overhead.md").write_text(md)
    (RESULTS / "worker_overhead.json").write_text(json.dumps(results, indent=2))
    write_plot(results, RESULTS / "worker_overhead.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
