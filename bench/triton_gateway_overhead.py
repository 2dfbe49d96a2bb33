"""The gateway's added latency in front of real NVIDIA Triton against in front of the embedded
worker, same model, one run side by side (issue 10: not a target, measured).

Starts ``inferplex up --workers 1`` and a tritonserver (scripts/ensure-triton: Python backend
only, so the ONNX model runs there through inferplex's adapter under ONNX Runtime), uploads the
small MLP twice (``on_worker`` is loaded before Triton is registered, ``on_triton`` after, so
first fit puts it on Triton), then drives one open-loop Poisson run of eight streams at once:
{gateway, direct} x {worker, Triton} x {HTTP, gRPC}. Direct streams use the instance-level
name (and the worker's credential). Added latency = gateway p50/p99 - direct p50/p99.

    .venv/bin/python -m bench.triton_gateway_overhead [--rate 20] [--seconds 15]

Writes bench/results/triton_gateway_overhead.{md,png}.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np

from bench import loadgen
from kserve.restricted import InstanceCredential
from tests.integration.cp_harness import http_infer, running_up
from tests.support import models
from tests.support.triton import run_triton, triton_unavailable

RESULTS = Path(__file__).resolve().parent / "results"
NOTES = """Notes. Both instances run the same ONNX MLP under ONNX Runtime on the CPU: the worker in a
confined model host, Triton in its Python backend's stub through inferplex's adapter (this Triton
has no onnxruntime backend), so the direct rows differ by instance, and the gateway's cost is the
gateway row minus the direct row of the same instance and protocol. Client, control plane and
both instances share this machine's cores; the load is light (open loop, Poisson) so queuing
stays small. Triton reports no compute time in its responses: behind Triton the gateway's
predictor reads the statistics extension instead (at most every stats_poll_interval_s)."""


def _streams(cp_url: tuple[str, str], worker: tuple[str, str], triton: tuple[str, str], key: str,
             credential: InstanceCredential, rate: float, seconds: float) -> list[loadgen.Stream]:
    x = {"INPUT0": np.ones((1, 64), np.float32)}
    out = []
    for i, (kind, proto) in enumerate(((loadgen.ClientKind.HTTP, 0), (loadgen.ClientKind.GRPC, 1))):
        label = kind.name.lower()
        for j, (where, target, model, direct_headers) in enumerate((
                ("worker", worker[proto], "acme__on_worker",
                 credential.grpc_headers() if proto else credential.http_headers()),
                ("triton", triton[proto], "acme__on_triton", {}))):
            seed = 10 * i + 2 * j
            public = model.removeprefix("acme__")
            out.append(loadgen.Stream("acme", public, loadgen.poisson(rate, seconds, seed=seed), x,
                                      cp_url[proto], key=key, kind=kind, name=f"gateway->{where} {label}"))
            out.append(loadgen.Stream("direct", model, loadgen.poisson(rate, seconds, seed=seed + 1), x,
                                      target, kind=kind, name=f"direct {where} {label}",
                                      headers=direct_headers))
    return out


def run(args: argparse.Namespace) -> dict[str, list[loadgen.Record]]:
    reason = triton_unavailable()
    if reason is not None:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        root = Path(tmp)
        env = {"INFERPLEX_PROFILE_ON_UPLOAD": "false"}
        with run_triton(root / "repo", root, "--strict-readiness=false") as triton, \
                running_up(root / "data", root / "up.log", workers=1, env=env) as cp:
            key = cp.create_tenant("acme")
            x = np.ones((1, 64), np.float32)
            for name in ("on_worker", "on_triton"):
                assert cp.upload(key, name, models.mlp_onnx().data).status_code == 201
                cp.wait_model_status(key, name)
                if name == "on_worker":
                    http_infer(cp, key, name, x)  # loaded on the worker, the only instance yet
                    with cp.admin() as c:
                        c.post("/admin/instances", json={
                            "http_url": triton.http_url, "grpc_url": triton.grpc_url,
                            "memory_bytes": 1 << 30, "metrics_url": triton.metrics_url,
                        }).raise_for_status()
            http_infer(cp, key, "on_triton", x)
            placed = {m["name"]: i["instance_id"] for i in cp.instances() for m in i["models"]}
            assert placed["acme__on_triton"].startswith("ext-"), placed
            worker = next(i for i in cp.instances() if i["kind"] == "embedded")
            cred = cp.instance_credential()
            streams = _streams((cp.http_url, cp.grpc_url), (worker["http_url"], worker["grpc_url"]),
                               (triton.http_url, triton.grpc_url), key, cred, args.rate, args.seconds)
            warm = loadgen.run([loadgen.Stream(s.tenant, s.model, loadgen.constant(20, 1.0), s.inputs, s.url,
                                               key=s.key, kind=s.kind, name=s.name, headers=s.headers)
                                for s in streams], duration_s=1.0)
            failed = [r for r in warm.records if r.outcome is not loadgen.Outcome.OK]
            assert not failed, failed[:3]
            result = loadgen.run(streams, duration_s=args.seconds)
    by: dict[str, list[loadgen.Record]] = {}
    for r in result.records:
        by.setdefault(r.stream, []).append(r)
    return by


def write(by: dict[str, list[loadgen.Record]], args: argparse.Namespace) -> str:
    summaries = {name: loadgen.summarize(records, 1e9, args.seconds) for name, records in sorted(by.items())}
    rows = ["| instance | protocol | direct p50 | gateway p50 | added p50 | direct p99 | gateway p99 | added p99 |",
            "|---|---|---|---|---|---|---|---|"]
    for where in ("worker", "triton"):
        for proto in ("http", "grpc"):
            d, g = summaries[f"direct {where} {proto}"], summaries[f"gateway->{where} {proto}"]
            assert None not in (d.p50_ms, g.p50_ms, d.p99_ms, g.p99_ms)
            rows.append(f"| {where} | {proto} | {d.p50_ms:.2f} | {g.p50_ms:.2f} | {g.p50_ms - d.p50_ms:+.2f} | "
                        f"{d.p99_ms:.2f} | {g.p99_ms:.2f} | {g.p99_ms - d.p99_ms:+.2f} |")
    text = "\n".join([
        "# Gateway overhead in front of real Triton vs the embedded worker",
        "",
        f"`.venv/bin/python -m bench.triton_gateway_overhead --rate {args.rate:g} --seconds {args.seconds:g}`"
        f" on {platform.machine()}, {platform.python_version()}; tritonserver 2.51.0 (nvidia-pytriton 0.7.0).",
        f"Open loop, Poisson {args.rate:g} req/s per stream, 8 streams at once; latencies in ms.",
        "",
        *rows,
        "",
        "Every stream:",
        "",
        loadgen.markdown_table(summaries, "stream"),
        "",
        NOTES,
        "",
        "![latency CDF](triton_gateway_overhead.png)",
        "",
    ])
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "triton_gateway_overhead.md").write_text(text)
        loadgen.plot_latency_cdf(by, RESULTS / "triton_gateway_overhead.png")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second per stream")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    print(write(run(args), args))


if __name__ == "__main__":
    main()
