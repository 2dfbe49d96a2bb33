"""Gateway overhead: the same requests through the gateway and straight to the worker.

Starts ``inferplex up --workers 1``, uploads the small MLP for a tenant, loads it
through the gateway, then in one run, interleaved:
- latency: sequential requests alternating gateway / direct (unmodified tritonclient,
  binary tensors), p50/p99 per protocol;
- throughput: alternating fixed-length windows of ``--concurrency`` asyncio clients.
Direct requests use the worker's address and the instance-level model name.

    .venv/bin/python -m bench.gateway_overhead [--requests 2000] [--seconds 3]

Writes bench/results/gateway_overhead.{md,json,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio

from bench._common import pct, pyplot
from tests.integration.cp_harness import running_up
from tests.support import models

RESULTS = Path(__file__).resolve().parent / "results"
NOTES = """Notes. Latency is sequential (one request in flight), so it shows what the gateway adds to a
request: authentication (hash + cache lookup), name resolution, placement lookup, one more
loopback hop, and the model-name rewrite. Throughput is CPU-bound here: client, control plane
and worker share the same cores, so the ratio is set by the CPU each request costs in every
process, not by gateway queuing; the CPU table (from /proc, user + system, per request answered
in the throughput windows) shows where it goes. The worker costs more per request behind the
gateway than direct: with fewer requests waiting, each one pays its own event-loop wake-up and
thread hand-off. What was done for the hot path: v2 infer is served by an ASGI fast path before
FastAPI's router (the router alone cost ~0.5 ms per request with ~50 routes), uvloop, no tensor
decoding at the gateway (body / protobuf forwarded as is), a bare keep-alive HTTP/1.1 pool
(asyncio protocol + httptools) for the hop instead of aiohttp, the model-name rewrite done by
swapping the top-level value in place instead of a JSON parse and re-encode, request metrics
bound once per series, and no statistics reads: the worker reports each batch's compute time in
its response (parameter inferplex_compute_ns), which the gateway reads with one anchored regex
(HTTP, ~2 us) or a map lookup (gRPC) and feeds to the predictor.

gRPC hot path, tried and not kept (control-plane CPU us per gRPC request; `--protocols grpc
--requests 1000 --rounds 2 --no-write`, configurations alternated, two runs each; run-to-run
spread is about +-20 us): as is 552-591; grpc.optimization_target "throughput" on server and
forwarding channel 546-567, "latency" 559-595; latency plus a closure-free ModelInfer 546-550.
None is outside the noise. Where the time goes: a stripped servicer that only forwards the
protobuf over the same grpc.aio stub (no auth, resolve, placement, predictor, metrics) still
costs 478-490 us (a measurement-only build), so grpc.aio itself (serving the call plus one
client call) is ~85% of the gateway's cost and all of our per-request logic is ~80 us; even deleting all of it gives a throughput ratio of only 0.58
here. The same stripped path on a threaded grpc.server with a sync forwarding stub costs more
(519-544 us, ratio 0.50), so the threaded design was not built. Raw-bytes handlers would save
at most the protobuf work, measured at 1.2 us per request (parse + serialize of request and
response with upb), so they were not built either. A larger cut would need the tensor path
out of Python's grpc altogether (not tried)."""
X = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)


def _sync_caller(protocol: str, url: str, model: str, headers: dict[str, str]) -> tuple[Callable[[], Any], Any]:
    headers = dict(headers)  # tritonclient.http adds its own entries to the dict it is given
    if protocol == "http":
        c = httpclient.InferenceServerClient(url)
        inp = httpclient.InferInput("INPUT0", list(X.shape), "FP32")
        inp.set_data_from_numpy(X, binary_data=True)
        out = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)]
    else:
        c = grpcclient.InferenceServerClient(url)
        inp = grpcclient.InferInput("INPUT0", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        out = [grpcclient.InferRequestedOutput("OUTPUT0")]
    return (lambda: c.infer(model, [inp], outputs=out, headers=headers)), c


def latency(protocol: str, targets: dict[str, tuple[str, str, dict[str, str]]], n: int) -> dict[str, list[float]]:
    callers = {k: _sync_caller(protocol, *v) for k, v in targets.items()}
    for call, _ in callers.values():  # warm-up: connections, caches
        for _ in range(50):
            call()
    samples: dict[str, list[float]] = {k: [] for k in callers}
    order = list(callers)
    for i in range(n):
        for k in (order if i % 2 == 0 else order[::-1]):  # alternate who goes first
            call = callers[k][0]
            t0 = time.perf_counter()
            call()
            samples[k].append(time.perf_counter() - t0)
    for _, client in callers.values():
        client.close()
    return samples


async def _window(protocol: str, url: str, model: str, headers: dict[str, str], concurrency: int,
                  seconds: float) -> int:
    if protocol == "http":
        client: Any = httpaio.InferenceServerClient(url, conn_limit=concurrency)
        inp = httpaio.InferInput("INPUT0", list(X.shape), "FP32")
        inp.set_data_from_numpy(X, binary_data=True)
        outputs = [httpaio.InferRequestedOutput("OUTPUT0", binary_data=True)]
    else:
        client = grpcaio.InferenceServerClient(url)
        inp = grpcaio.InferInput("INPUT0", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        outputs = [grpcaio.InferRequestedOutput("OUTPUT0")]
    headers = dict(headers)
    done = 0
    try:
        for _ in range(20):
            await client.infer(model, [inp], outputs=outputs, headers=headers)
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await client.infer(model, [inp], outputs=outputs, headers=headers)
                done += 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    finally:
        await client.close()
    return done


_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def throughput(protocol: str, targets: dict[str, tuple[str, str, dict[str, str]]], concurrency: int,
               seconds: float, rounds: int, pids: dict[str, int]) -> tuple[dict[str, list[float]],
                                                                            dict[str, dict[str, float]]]:
    """Requests/s per window, and CPU microseconds per request of each process per target
    (the evidence for where a shared core's time goes)."""
    rates: dict[str, list[float]] = {k: [] for k in targets}
    cpu: dict[str, dict[str, float]] = {k: dict.fromkeys(pids, 0.0) for k in targets}
    done: dict[str, int] = dict.fromkeys(targets, 0)
    for r in range(rounds):
        for k in (list(targets) if r % 2 == 0 else list(targets)[::-1]):
            before = {p: _cpu_s(pid) for p, pid in pids.items()}
            n = asyncio.run(_window(protocol, *targets[k], concurrency, seconds))
            for p, pid in pids.items():
                cpu[k][p] += _cpu_s(pid) - before[p]
            done[k] += n
            rates[k].append(n / seconds)
    per_req = {k: {p: s / max(1, done[k]) * 1e6 for p, s in v.items()} for k, v in cpu.items()}
    return rates, per_req


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, running_up(
        Path(tmp) / "data", Path(tmp) / "up.log", workers=1,
        env={"INFERPLEX_PROFILE_ON_UPLOAD": "false"},
    ) as cp:
        key = cp.create_tenant("bench")
        r = cp.upload(key, "mlp", models.mlp_onnx().data)
        r.raise_for_status()
        cp.wait_model_status(key, "mlp", "ready")
        auth = {"authorization": f"Bearer {key}"}
        _sync_caller("grpc", cp.grpc_url, "mlp", auth)[0]()  # loads it on the worker
        worker = next(i for i in cp.instances() if i["models"])
        qualified = worker["models"][0]["name"]
        up_pid = cp.proc.popen.pid
        # the client's CPU includes warm-up and connection setup of each window (same for both)
        pids = {"client": os.getpid(), "gateway": up_pid, "worker": _children(up_pid)[0]}
        results: dict[str, Any] = {"protocols": {}}
        for protocol in args.protocols:
            gw_url = cp.http_url if protocol == "http" else cp.grpc_url
            w_url = worker["http_url"] if protocol == "http" else worker["grpc_url"]
            # direct: the worker's credential, as the gateway sends it (up's workers demand it)
            credential = cp.instance_credential()
            direct = credential.http_headers() if protocol == "http" else credential.grpc_headers()
            targets = {"gateway": (gw_url, "mlp", auth), "direct": (w_url, qualified, direct)}
            lat = latency(protocol, targets, args.requests)
            thr, cpu_us = throughput(protocol, targets, args.concurrency, args.seconds, args.rounds, pids)
            results["protocols"][protocol] = {
                "latency_ms": {k: {"p50": pct(v, 50) * 1e3, "p99": pct(v, 99) * 1e3, "n": len(v)}
                               for k, v in lat.items()},
                "throughput_rps": {k: float(np.median(v)) for k, v in thr.items()},
                "throughput_windows": thr,
                "cpu_us_per_request": cpu_us,
                "_samples": lat,
            }
            p = results["protocols"][protocol]
            p["added_p50_ms"] = p["latency_ms"]["gateway"]["p50"] - p["latency_ms"]["direct"]["p50"]
            p["added_p99_ms"] = p["latency_ms"]["gateway"]["p99"] - p["latency_ms"]["direct"]["p99"]
            p["throughput_ratio"] = p["throughput_rps"]["gateway"] / p["throughput_rps"]["direct"]
            print(f"{protocol}: added p50 {p['added_p50_ms']:.3f} ms, p99 {p['added_p99_ms']:.3f} ms, "
                  f"throughput ratio {p['throughput_ratio']:.2f}; CPU us/request "
                  f"{json.dumps({k: {q: round(x) for q, x in v.items()} for k, v in cpu_us.items()})}",
                  flush=True)
        results["setup"] = {
            "requests_per_target": args.requests, "concurrency": args.concurrency,
            "window_s": args.seconds, "rounds": args.rounds, "model": "MLP 64-128-10 FP32 ONNX, batch 1",
            "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
            "note": "client, control plane and worker share the same cores",
        }
        return results


def write(results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    samples = {p: v.pop("_samples") for p, v in results["protocols"].items()}
    (RESULTS / "gateway_overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    s = results["setup"]
    lines = ["# Gateway overhead", "",
             f"Command: `.venv/bin/python -m bench.gateway_overhead --requests {s['requests_per_target']} "
             f"--concurrency {s['concurrency']} --seconds {s['window_s']} --rounds {s['rounds']}`", "",
             f"Setup: `inferplex up --workers 1`, {s['model']}; unmodified tritonclient, binary tensors; "
             f"gateway and direct requests interleaved in one run. Machine: {s['machine']}; {s['note']}.", "",
             "| protocol | direct p50 ms | gateway p50 ms | added p50 ms | direct p99 ms | gateway p99 ms "
             "| direct req/s | gateway req/s | ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for proto, p in results["protocols"].items():
        d, g = p["latency_ms"]["direct"], p["latency_ms"]["gateway"]
        lines.append(f"| {proto} | {d['p50']:.3f} | {g['p50']:.3f} | {p['added_p50_ms']:.3f} | {d['p99']:.3f} | "
                     f"{g['p99']:.3f} | {p['throughput_rps']['direct']:.0f} | {p['throughput_rps']['gateway']:.0f} "
                     f"| {p['throughput_ratio']:.2f} |")
    lines += ["", "CPU per request in the throughput windows (microseconds, user + system):", "",
              "| protocol | path | client | control plane | worker | total |", "|---|---|---|---|---|---|"]
    for proto, p in results["protocols"].items():
        for path, c in p["cpu_us_per_request"].items():
            lines.append(f"| {proto} | {path} | {c['client']:.0f} | {c['gateway']:.0f} | {c['worker']:.0f} "
                         f"| {sum(c.values()):.0f} |")
    lines += ["", "Target: under 1 ms added at p50, throughput at least 0.7 of direct.", "", NOTES, ""]
    (RESULTS / "gateway_overhead.md").write_text("\n".join(lines))
    try:
        plt = pyplot()
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for proto, lat in samples.items():
        for target, values in lat.items():
            v = np.sort(np.asarray(values) * 1e3)
            axes[0].plot(v, np.linspace(0, 1, len(v)), label=f"{proto} {target}")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("latency (ms, log)")
    axes[0].set_ylabel("CDF")
    axes[0].legend()
    axes[0].set_title("sequential latency")
    protos = list(results["protocols"])
    xs = np.arange(len(protos))
    for i, target in enumerate(("direct", "gateway")):
        axes[1].bar(xs + i * 0.4, [results["protocols"][p]["throughput_rps"][target] for p in protos], 0.4,
                    label=target)
    axes[1].set_xticks(xs + 0.2, protos)
    axes[1].set_ylabel("requests/s")
    axes[1].set_title(f"throughput, {s['concurrency']} concurrent clients")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "gateway_overhead.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests per target")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one throughput window")
    parser.add_argument("--rounds", type=int, default=4, help="throughput windows per target")
    parser.add_argument("--protocols", nargs="+", choices=("http", "grpc"), default=["http", "grpc"])
    parser.add_argument("--no-write", action="store_true", help="print only (profiling, quick checks)")
    args = parser.parse_args()
    results = run(args)
    if not args.no_write:
        write(results)


if __name__ == "__main__":
    main()
