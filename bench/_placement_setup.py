"""What the placement benchmark (bench/placement_eviction.py) builds and measures.

Models: dense stacks (a width x width MatMul + Tanh per layer, one shared weight) in
three widths, as ONNX and as TorchScript, so a model's resident size is set by its
width (and runtime) and its execute time by its depth and rows. The workload: Zipf-skewed
popularity over the models, a new permutation half-way, one open-loop Poisson stream
per model (``bench.loadgen``). The pure parts (popularity, schedules, metric parsing,
attainment over time) are here so tests/unit/test_bench_placement.py can hold them.
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from bench import loadgen
from bench._scheduler_setup import BenchModel
from tests.support import models as test_models
from tests.support.models import ModelArtifact

# (runtime, width, layers, rows): the width sets resident bytes (the weight is width^2 x 4 bytes,
# plus what the runtime keeps per model); each request's row is repeated ``rows`` times through
# the stack, so layers x rows give an execute time of ~5-12 ms here whatever the width: well
# above the ~1.2 ms the control plane spends per request, and below the 50-300 ms of a load
MODEL_TYPES: tuple[tuple[str, int, int, int], ...] = (
    ("onnx", 256, 120, 32), ("onnx", 512, 60, 12), ("onnx", 1024, 24, 8),
    ("torchscript", 256, 60, 32), ("torchscript", 512, 40, 12), ("torchscript", 1024, 16, 8),
)
# one request per execution: batching is the scheduler benchmarks' subject, and a model that
# batches is profiled at every batch size (uploads of 100 models would take most of an hour)
MAX_BATCH_SIZE = 1


def _weight(width: int) -> np.ndarray:
    return (np.random.default_rng(3).standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)


def onnx_dense(name: str, layers: int, width: int, rows: int, max_batch_size: int = 8) -> ModelArtifact:
    """[batch, width] -> each row repeated ``rows`` times -> ``layers`` x (MatMul by one shared
    [width, width] weight, Tanh) -> the mean of each row's copies: [batch, width]."""
    nodes = [helper.make_node("Unsqueeze", ["INPUT0", "AXIS1"], ["u"]),
             helper.make_node("Expand", ["u", "ROWS"], ["e"]),
             helper.make_node("Reshape", ["e", "FLAT"], ["h"])]
    prev = "h"
    for i in range(layers):
        nodes += [helper.make_node("MatMul", [prev, "W"], [f"m{i}"]), helper.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        prev = f"t{i}"
    nodes += [helper.make_node("Reshape", [prev, "GROUPED"], ["g"]),
              helper.make_node("ReduceMean", ["g"], ["OUTPUT0"], axes=[1], keepdims=0)]
    consts = {"AXIS1": [1], "ROWS": [1, rows, 1], "FLAT": [-1, width], "GROUPED": [-1, rows, width]}
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(_weight(width), "W"),
                     *(numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", test_models.ONNX_OPSET)])
    model.ir_version = test_models.ONNX_IR_VERSION
    config = {"name": name, "platform": "onnxruntime_onnx", "max_batch_size": max_batch_size,
              "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [width]}],
              "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [width]}]}
    return ModelArtifact(config, "model.onnx", model.SerializeToString())


def torchscript_dense(name: str, layers: int, width: int, rows: int, max_batch_size: int = 8) -> ModelArtifact:
    """The TorchScript twin of ``onnx_dense`` (Triton's INPUT__0 / OUTPUT__0 naming)."""
    import torch

    class Dense(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.from_numpy(_weight(width)), requires_grad=False)
            self.depth, self.rows, self.width = layers, rows, width

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = x.unsqueeze(1).expand(-1, self.rows, -1).reshape(-1, self.width)
            for _ in range(self.depth):
                h = torch.tanh(torch.matmul(h, self.w))
            return h.reshape(-1, self.rows, self.width).mean(1)

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Dense().eval()), buf)
    config = {"name": name, "platform": "pytorch_libtorch", "max_batch_size": max_batch_size,
              "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [width]}],
              "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [width]}]}
    return ModelArtifact(config, "model.pt", buf.getvalue())


def model_name(index: int, runtime: str, width: int) -> str:
    return f"m{index:03d}_{'pt' if runtime == 'torchscript' else 'onnx'}{width}"


def model_set(count: int, types: Sequence[tuple[str, int, int, int]] = MODEL_TYPES,
              max_batch_size: int = MAX_BATCH_SIZE) -> list[BenchModel]:
    """``count`` models cycling through ``types``; each type is built once (the same bytes
    under many names, as many tenants' copies of one architecture would be)."""
    rng = np.random.default_rng(0)
    built: dict[tuple[str, int, int, int], ModelArtifact] = {}
    out = []
    for i in range(count):
        key = runtime, width, layers, rows = types[i % len(types)]
        if key not in built:
            build = torchscript_dense if runtime == "torchscript" else onnx_dense
            built[key] = build("t", layers, width, rows, max_batch_size)
        base = built[key]
        name = model_name(i, runtime, width)
        art = ModelArtifact({**base.config, "name": name}, base.filename, base.data)
        inp = art.config["input"][0]
        request = {inp["name"]: rng.standard_normal([1, width]).astype(np.float32)}
        out.append(BenchModel(name, art, request, max_batch_size))
    return out


def upload_options(m: BenchModel) -> dict[str, object]:
    """What ``POST /v1/models`` needs beside the file: TorchScript declares its tensors."""
    opts: dict[str, object] = {"max_batch_size": m.max_batch_size, "slo_ms": m.slo_ms}
    cfg = m.artifact.config
    if cfg["platform"] == "pytorch_libtorch":
        opts["inputs"] = [{"name": t["name"], "datatype": "FP32", "dims": t["dims"]} for t in cfg["input"]]
        opts["outputs"] = [{"name": t["name"], "datatype": "FP32", "dims": t["dims"]} for t in cfg["output"]]
    return opts


def model_type(name: str) -> str:
    """``m007_pt512`` -> ``pt512``: the type part of a benchmark model's name."""
    return name.split("_", 1)[1]


# ---------------------------------------------------------------- workload (pure)


def zipf_weights(n: int, s: float) -> np.ndarray:
    """Popularity of ranks 1..n under Zipf(s), summing to 1."""
    if n < 1 or not math.isfinite(s) or s < 0:
        raise ValueError(f"zipf_weights needs n >= 1 and a finite s >= 0, got n={n}, s={s}")
    w = 1.0 / np.arange(1, n + 1, dtype=float) ** s
    return w / w.sum()


def phase_rates(total_rps: float, n: int, s: float, seed: int) -> np.ndarray:
    """Requests/s per model index: Zipf(s) popularity over a seeded permutation of the
    models (model ``perm[r]`` gets rank ``r``'s share of ``total_rps``)."""
    perm = np.random.default_rng(seed).permutation(n)
    rates = np.empty(n)
    rates[perm] = total_rps * zipf_weights(n, s)
    return rates


@dataclass(frozen=True)
class Phase:
    """A stretch of the run with one popularity: ``rates[i]`` req/s for model i."""

    label: str
    start_s: float
    duration_s: float
    rates: tuple[float, ...]

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


def schedules(phases: Sequence[Phase], seed: int) -> list[list[float]]:
    """One arrival schedule per model: Poisson at each phase's rate within its window,
    phases laid end to end. The same seed gives the same schedules (every policy sees the
    same requests)."""
    n = len(phases[0].rates)
    if any(len(p.rates) != n for p in phases):
        raise ValueError("every phase needs one rate per model")
    out: list[list[float]] = [[] for _ in range(n)]
    for k, p in enumerate(phases):
        for i, rate in enumerate(p.rates):
            if rate > 0:
                out[i] += [p.start_s + t for t in loadgen.poisson(rate, p.duration_s, seed=seed + 1000 * k + i)]
    return out


def hot_set(rates: Sequence[float], fraction: float) -> list[int]:
    """The fewest model indices (most popular first) that draw ``fraction`` of the requests."""
    order = sorted(range(len(rates)), key=lambda i: -rates[i])
    total, acc, out = sum(rates), 0.0, []
    for i in order:
        if acc >= fraction * total:
            break
        out.append(i)
        acc += rates[i]
    return out


def ideal_miss_fraction(rates: Sequence[float], sizes: Sequence[int], budget: int) -> float:
    """The share of requests to models outside memory if it held the models with the most
    requests per byte (a static cache that knows the popularity; packing per instance
    ignored): the cold stream even a good policy must load for or refuse."""
    order = sorted(range(len(rates)), key=lambda i: -rates[i] / max(sizes[i], 1))
    used, hit = 0, 0.0
    for i in order:
        if used + sizes[i] <= budget:
            used += sizes[i]
            hit += rates[i]
    total = sum(rates)
    return 1.0 - hit / total if total else 0.0


def offered_rate(saturation_rps: float, miss_fraction: float, load_s: float, utilization: float) -> float:
    """Requests/s in all that keep the instance ``utilization`` busy: each request costs
    1 / saturation of its time, each request that misses memory one load more."""
    if saturation_rps <= 0 or not 0 < utilization <= 1:
        raise ValueError(f"need saturation > 0 and 0 < utilization <= 1, got {saturation_rps}, {utilization}")
    return utilization / (1.0 / saturation_rps + miss_fraction * load_s)


# ---------------------------------------------------------------- metrics (pure)


def metric_totals(text: str, families: Sequence[str], where: Mapping[str, str] | None = None) -> dict[str, float | None]:
    """Each family's value summed over its labelled series in Prometheus text (None when
    the family is neither declared nor has series: not exported by this build). ``where`` keeps only series
    whose labels include these ``name="value"`` pairs (e.g. ``{"outcome": "ok"}``)."""
    out: dict[str, float | None] = dict.fromkeys(families)
    wanted = set(families)
    for line in text.splitlines():
        if line.startswith("# TYPE "):  # declared with no series yet: zero, not absent
            declared = line.split()[2]
            if declared in wanted and out[declared] is None:
                out[declared] = 0.0
            continue
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        if name not in wanted:
            continue
        if where and not all(f'{k}="{v}"' in labels for k, v in where.items()):
            out[name] = out[name] or 0.0
            continue
        try:
            out[name] = (out[name] or 0.0) + float(value)
        except ValueError:
            continue
    return out


def counter_delta(after: Mapping[str, float | None], before: Mapping[str, float | None]) -> dict[str, float | None]:
    """``after - before`` per family; None where either side lacks it."""
    return {k: None if v is None or before.get(k) is None else v - before[k]  # type: ignore[operator]
            for k, v in after.items()}


# ---------------------------------------------------------------- results (pure)


def met_slo(r: loadgen.Record, slo_ms: Mapping[str, float]) -> bool:
    return (r.outcome is loadgen.Outcome.OK and r.latency_s is not None
            and r.latency_s * 1e3 <= slo_ms[r.model])


@dataclass(frozen=True)
class Attainment:
    """One slice of a run, refusals counted as misses."""

    sent: int
    within_slo: int
    refused: int
    not_sent: int
    duration_s: float
    p99_ms: float | None

    @property
    def attainment(self) -> float | None:
        """Answered OK within SLO over requests sent: a refusal is a miss."""
        return self.within_slo / self.sent if self.sent else None

    @property
    def goodput_rps(self) -> float:
        return self.within_slo / self.duration_s if self.duration_s > 0 else 0.0


def attainment(records: Sequence[loadgen.Record], slo_ms: Mapping[str, float], start_s: float,
               end_s: float) -> Attainment:
    """Requests scheduled in ``[start_s, end_s)``."""
    part = [r for r in records if start_s <= r.scheduled_s < end_s]
    sent = [r for r in part if r.outcome is not loadgen.Outcome.NOT_SENT]
    lat = [r.latency_s * 1e3 for r in sent if r.outcome is loadgen.Outcome.OK and r.latency_s is not None]
    return Attainment(sent=len(sent), within_slo=sum(met_slo(r, slo_ms) for r in sent),
                      refused=sum(r.outcome.refused for r in sent), not_sent=len(part) - len(sent),
                      duration_s=end_s - start_s,
                      p99_ms=float(np.percentile(lat, 99)) if lat else None)


def attainment_series(records: Sequence[loadgen.Record], slo_ms: Mapping[str, float], end_s: float,
                      bucket_s: float) -> list[tuple[float, float | None]]:
    """(bucket start, attainment) per ``bucket_s`` of scheduled time up to ``end_s``."""
    out = []
    t = 0.0
    while t < end_s - 1e-9:
        out.append((t, attainment(records, slo_ms, t, min(t + bucket_s, end_s)).attainment))
        t += bucket_s
    return out


# ---------------------------------------------------------------- counters over time


class CounterSampler:
    """Scrapes the control plane's ``/metrics`` every ``interval_s`` on a thread while a
    run drives load, so counters (loads, cold starts) can be read per minute and at the
    shift. ``samples``: (seconds since ``start()``, totals)."""

    def __init__(self, scrape: Callable[[], str], families: Sequence[str], interval_s: float) -> None:
        self._scrape = scrape
        self.families = tuple(families)
        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[str, float | None]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _take(self) -> None:
        try:
            text = self._scrape()
        except Exception:  # noqa: BLE001 - a missed scrape leaves a gap, not a crash
            return
        self.samples.append((time.perf_counter() - self._t0, metric_totals(text, self.families)))

    def _run(self) -> None:
        k = 1
        # on a fixed grid from start(), not interval after each scrape: phase edges stay on samples
        while not self._stop.wait(max(0.0, self._t0 + k * self.interval_s - time.perf_counter())):
            self._take()
            k += 1

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._take()
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._take()


def rate_per_minute(samples: Sequence[tuple[float, Mapping[str, float | None]]], family: str
                    ) -> list[tuple[float, float]]:
    """(interval midpoint s, increase per minute) between consecutive samples that have it."""
    pts = [(t, v[family]) for t, v in samples if v.get(family) is not None]
    return [((t0 + t1) / 2, (v1 - v0) * 60.0 / (t1 - t0))  # type: ignore[operator]
            for (t0, v0), (t1, v1) in zip(pts, pts[1:], strict=False) if t1 > t0]


def value_at(samples: Sequence[tuple[float, Mapping[str, float | None]]], family: str, t: float) -> float | None:
    """The family's value in the last sample taken at or before ``t`` (None if none has it)."""
    best = None
    for ts, v in samples:
        if ts <= t and v.get(family) is not None:
            best = v[family]
    return best
