"""Open-loop load driver: every request leaves at its scheduled time, answered or not.

A closed-loop client (N workers, each waiting for its answer) slows down with the
server and so never shows overload; an open-loop one keeps offering the load a
population of independent users would. A workload is a list of streams (tenant,
key, model, inputs, arrival schedule, client kind), merged into one timeline. The
driver sleeps until each request's time, hands it to its client and moves on; many
are in flight. A bound on requests in flight keeps the driver itself safe: a request
due while it is reached is recorded as "not sent: driver saturated", never delayed,
so the schedule stays the schedule and the report says how much of it was not offered.
Each record carries the driver's own lateness, so a run on a busy machine shows it.

Clients: tritonclient.http.aio / tritonclient.grpc.aio, unmodified, or raw httpx. Only
loopback targets (127.0.0.1, localhost, ::1) are accepted.

    from bench import loadgen
    x = {"INPUT0": np.zeros((1, 64), np.float32)}
    streams = [
        loadgen.Stream("a", "mlp", loadgen.poisson(200, 10, seed=1), x, "127.0.0.1:8000", key=key_a),
        loadgen.Stream("b", "mlp", loadgen.on_off(800, 0, 0.5, 1.5, 10, seed=2), x, "127.0.0.1:8001",
                       key=key_b, kind=loadgen.ClientKind.GRPC),
    ]
    result = loadgen.run(streams, duration_s=10, max_in_flight=2000)
    print(loadgen.markdown_table(loadgen.summarize_by(result.records, lambda r: r.tenant, 50.0, 10)))

Smoke run against a running ``inferplex up`` (inputs built from the model's metadata):

    python -m bench.loadgen --url 127.0.0.1:8000 --model mlp --key K --rate 100 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException

from bench._loadgen_results import (
    Outcome,
    Record,
    Summary,
    classify,
    markdown_table,
    plot_goodput_vs_load,
    plot_latency_cdf,
    summarize,
    summarize_by,
)
from bench._loadgen_schedule import constant, on_off, poisson
from bench._loadgen_transport import ClientKind, Transport, loopback_address, open_transport
from kserve.errors import InvalidArgument

__all__ = ["ClientKind", "Outcome", "Record", "Run", "Stream", "Summary", "constant", "drive", "markdown_table",
           "on_off", "plot_goodput_vs_load", "plot_latency_cdf", "poisson", "run", "summarize",
           "summarize_by", "timeline"]

InputBuilder = Callable[[int], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Stream:
    """One tenant's requests to one model: when (``schedule``, seconds from the run's start)
    and what (``inputs``: the same tensors every time, or built per request index; a builder
    runs before the request's send time, so only a slow one shows up as lateness)."""

    tenant: str
    model: str
    schedule: Sequence[float]
    inputs: Mapping[str, np.ndarray] | InputBuilder
    url: str
    key: str | None = None
    kind: ClientKind = ClientKind.HTTP
    name: str = ""  # a label for reports; default "tenant/model"
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. inferplex-timeout-ms
    outputs: Sequence[str] | None = None  # None: every output

    def __post_init__(self) -> None:
        loopback_address(self.url)
        if any(b < a for a, b in zip(self.schedule, self.schedule[1:], strict=False)) or \
                (self.schedule and self.schedule[0] < 0):
            raise InvalidArgument(f"stream {self.label!r}: its schedule must be sorted offsets >= 0 "
                                  "(use bench.loadgen.poisson / on_off / constant)")

    @property
    def label(self) -> str:
        return self.name or f"{self.tenant}/{self.model}"

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.key is not None:
            headers["authorization"] = f"Bearer {self.key}"
        return headers


def timeline(streams: Sequence[Stream]) -> list[tuple[float, int, int]]:
    """Every stream's arrivals merged: ``(offset_s, stream index, request index in it)``,
    by time (ties in stream order)."""
    return sorted(((t, si, ri) for si, s in enumerate(streams) for ri, t in enumerate(s.schedule)),
                  key=lambda e: (e[0], e[1]))


@dataclass(frozen=True, slots=True)
class Run:
    """What one drive produced: a record per scheduled request, in timeline order."""

    records: list[Record]
    duration_s: float
    max_in_flight: int
    peak_in_flight: int

    def summary(self, slo_ms: float | Mapping[str, float]) -> Summary:
        return summarize(self.records, slo_ms, self.duration_s)


async def _sleep_until(when: float) -> None:
    """Until ``time.perf_counter()`` reaches ``when``. uvloop's timers round to milliseconds, so
    an early wake-up sleeps the rest (a few times at most: a record shows any early send)."""
    for _ in range(4):
        if (early := when - time.perf_counter()) <= 0:
            return
        await asyncio.sleep(early)


async def drive(streams: Sequence[Stream], *, duration_s: float | None = None, max_in_flight: int = 1024,
                request_timeout_s: float = 30.0, start_delay_s: float = 0.05,
                max_lateness_s: float | None = None) -> Run:
    """Send every stream's requests at their scheduled times (offsets after ``duration_s``
    are left out); returns when each has an answer, an error or hit ``request_timeout_s``.
    With ``max_lateness_s``, a request the driver reaches later than that past its time is
    not sent either (a starved driver would otherwise catch up in a burst nobody scheduled)."""
    if max_in_flight < 1:
        raise InvalidArgument(f"max_in_flight must be >= 1, got {max_in_flight}")
    entries = timeline(streams)
    if duration_s is not None:
        entries = [e for e in entries if e[0] < duration_s]
    window = duration_s if duration_s is not None else max((e[0] for e in entries), default=0.0)
    # perf_counter, not loop.time(): uvloop's clock counts whole milliseconds
    clock = time.perf_counter
    # the clients' own timeouts sit past the driver's, so a slow answer is always a "timeout"
    transports: dict[tuple[ClientKind, str], Transport] = {}
    for s in streams:
        target = (s.kind, loopback_address(s.url))
        if target not in transports:
            transports[target] = open_transport(s.kind, s.url, max_in_flight, request_timeout_s + 1.0)
    clients = [transports[(s.kind, loopback_address(s.url))] for s in streams]
    fixed = [None if callable(s.inputs) else clients[i].prepare(s.model, s.inputs, s.request_headers(), s.outputs)
             for i, s in enumerate(streams)]
    records: list[Record | None] = [None] * len(entries)
    in_flight = peak = 0
    # a full collection over everything the caller made before is a pause in the schedule
    gc.collect()
    gc.freeze()
    t0 = clock() + start_delay_s

    async def one(idx: int, stream: Stream, client: Transport, prepared: Any, scheduled: float) -> None:
        nonlocal in_flight
        sent = clock() - t0
        try:
            async with asyncio.timeout(request_timeout_s):
                status, message = await client.send(prepared)
            outcome = classify(status)
        except TimeoutError:
            outcome, status, message = Outcome.TIMEOUT, "timeout", f"no answer within {request_timeout_s:g} s"
        except Exception as exc:  # noqa: BLE001 - every failure is a result to record, not a crash
            outcome, status, message = Outcome.TRANSPORT, type(exc).__name__, str(exc)[:200]
        finally:
            in_flight -= 1
        records[idx] = Record(stream.label, stream.tenant, stream.model, scheduled, sent, clock() - t0,
                              outcome, status, message)

    tasks: set[asyncio.Task[None]] = set()
    try:
        for idx, (offset, si, ri) in enumerate(entries):
            stream, client = streams[si], clients[si]
            prepared = fixed[si]
            if prepared is None:
                build: InputBuilder = stream.inputs  # type: ignore[assignment]
                prepared = client.prepare(stream.model, build(ri), stream.request_headers(), stream.outputs)
            await _sleep_until(t0 + offset)
            behind = clock() - t0 - offset
            if in_flight >= max_in_flight or (max_lateness_s is not None and behind > max_lateness_s):
                why = (f"{max_in_flight} requests in flight" if in_flight >= max_in_flight
                       else f"driver {behind * 1e3:.0f} ms behind schedule")
                records[idx] = Record(stream.label, stream.tenant, stream.model, offset, None, None,
                                      Outcome.NOT_SENT, "not sent", why)
                continue
            in_flight += 1
            peak = max(peak, in_flight)
            task = asyncio.create_task(one(idx, stream, client, prepared, offset))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(0)  # start its send now, before the next request is built
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for transport in transports.values():
            await transport.close()
        gc.unfreeze()
    return Run([r for r in records if r is not None], window, max_in_flight, peak)


def run(streams: Sequence[Stream], **kwargs: Any) -> Run:
    """``drive`` on a fresh event loop (uvloop when installed: less driver lateness)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio works too
        uvloop = None
    # drive() keeps what was made before its schedule starts out of the collector's walks
    if uvloop is not None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(drive(streams, **kwargs))
    return asyncio.run(drive(streams, **kwargs))


def pin_driver(cpus: str) -> None:
    """Pin this process (the driver) to CPUs like ``"0"`` or ``"0,2-3"``, away from the
    processes it measures."""
    from worker.affinity import parse_cpus, pin_to

    pin_to(parse_cpus(cpus))


def metadata_inputs(kind: ClientKind, url: str, model: str, key: str | None, seed: int = 0) -> dict[str, np.ndarray]:
    """One request's tensors built from the model's v2 metadata (dynamic dimensions at 1)."""
    from tritonclient.utils import triton_to_np_dtype

    headers = {"authorization": f"Bearer {key}"} if key else {}
    address = loopback_address(url)
    if kind is ClientKind.GRPC:
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(address) as c:
            meta = c.get_model_metadata(model, headers=headers, as_json=True)
    else:
        import tritonclient.http as httpclient

        with httpclient.InferenceServerClient(address) as c:
            meta = c.get_model_metadata(model, headers=headers)
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for spec in meta["inputs"]:
        shape = [1 if int(d) < 0 else int(d) for d in spec["shape"]]
        if spec["datatype"] == "BYTES":
            out[spec["name"]] = np.full(shape, b"x", dtype=object)
        else:
            dtype = triton_to_np_dtype(spec["datatype"])
            out[spec["name"]] = (rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating)
                                 else np.zeros(shape, dtype))
    return out


def _schedule(args: argparse.Namespace) -> list[float]:
    if args.arrival == "poisson":
        return poisson(args.rate, args.duration, args.seed, args.count)
    if args.arrival == "constant":
        return constant(args.rate, args.duration, args.count)
    return on_off(args.rate, args.rate_off, args.on_s, args.off_s, args.duration, args.seed, args.count)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="loopback address, e.g. 127.0.0.1:8000 (gRPC: its own port)")
    p.add_argument("--protocol", choices=[k.value for k in ClientKind], default="http")
    p.add_argument("--model", required=True)
    p.add_argument("--key", default=None, help="the tenant's API key")
    p.add_argument("--tenant", default="cli", help="label in the report")
    p.add_argument("--arrival", choices=("poisson", "constant", "on-off"), default="poisson")
    p.add_argument("--rate", type=float, required=True, help="requests/s (in on periods for on-off)")
    p.add_argument("--rate-off", type=float, default=0.0, help="on-off: requests/s in off periods")
    p.add_argument("--on-s", type=float, default=1.0)
    p.add_argument("--off-s", type=float, default=1.0)
    p.add_argument("--duration", type=float, required=True, help="seconds of offered load")
    p.add_argument("--count", type=int, default=None, help="at most this many requests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slo-ms", type=float, default=100.0)
    p.add_argument("--max-in-flight", type=int, default=1024)
    p.add_argument("--timeout-s", type=float, default=30.0, help="the driver gives up on a request after this")
    p.add_argument("--max-lateness-ms", type=float, default=None,
                   help="do not send a request the driver reaches this late (recorded as not sent)")
    p.add_argument("--cpus", default=None, help="pin the driver to these CPUs, e.g. 0 or 0,2-3")
    args = p.parse_args(argv)
    try:
        if args.cpus:
            pin_driver(args.cpus)
        kind = ClientKind(args.protocol)
        inputs = metadata_inputs(kind, args.url, args.model, args.key, args.seed)
        stream = Stream(args.tenant, args.model, _schedule(args), inputs, args.url, key=args.key, kind=kind)
        result = run([stream], duration_s=args.duration, max_in_flight=args.max_in_flight,
                     request_timeout_s=args.timeout_s,
                     max_lateness_s=None if args.max_lateness_ms is None else args.max_lateness_ms / 1e3)
    except (InvalidArgument, ValueError, InferenceServerException) as exc:
        p.error(str(exc))
    s = result.summary(args.slo_ms)
    print(markdown_table({f"{args.arrival} {args.rate:g}/s {args.protocol}": s}), end="")
    print(f"sent {s.sent} of {s.offered}, OK {s.ok} ({s.ok_within_slo} within {args.slo_ms:g} ms), "
          f"peak in flight {result.peak_in_flight}, driver lateness max {s.lateness_max_ms or 0:.2f} ms")
    if s.not_sent or (s.lateness_p99_ms or 0) > 5:
        print("warning: the driver could not keep up (requests not sent, or sent late): at this rate the "
              "numbers measure this machine's driver too; pin it (--cpus) or lower the rate")
    failed = [r for r in result.records if r.outcome is not Outcome.OK]
    example = {(r.outcome.value, r.status): r.message for r in failed}
    for (outcome, status), n in Counter((r.outcome.value, r.status) for r in failed).most_common():
        print(f"  {n} x {outcome} ({status}), e.g.: {example[(outcome, status)]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
