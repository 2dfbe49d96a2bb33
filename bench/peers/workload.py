"""The peers benchmark's models and trace: the same files and the same requests for every system.

Models: MLPs (Gemm + Relu) of three sizes and small CNNs (Conv 3x3 + Relu + MaxPool, then
Gemm) of two, each as ONNX and as TorchScript built from the same numpy weights (so the
twins compute the same function; ``build_models`` checks it), a few seeded copies of each
(different weights: different tenants' models of one architecture). Every model's SLO
comes from its execute time measured here, on the servers' CPU with one thread.

Trace: per offered-load level, Zipf(s) popularity over a seeded permutation of the
models and a new permutation half-way (the popularity shift); every level uses the same two
permutations, each beginning with the one the level before ended with (the runner's
``Spec.trace``), and only the arrivals are drawn per level; each model's arrivals are
Poisson, or bursty on/off (on ``BURST_ON_S``, off ``BURST_OFF_S``, the same mean rate)
for every third model. Everything is seeded: ``trace_digest`` proves two runs replayed
the same requests.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from bench import loadgen
from bench.peers.base import PeerModel
from tests.support import models as test_models

# kind -> (family, layer sizes): MLP [in, hidden..., out]; CNN [channels...] on a 3x64x64 image
KINDS: dict[str, tuple[str, tuple[int, ...]]] = {
    "mlp_s": ("mlp", (256, 1024, 1024, 256)),
    "mlp_m": ("mlp", (512, 2048, 2048, 2048, 512)),
    "mlp_l": ("mlp", (1024, 4096, 4096, 1024)),
    "cnn_s": ("cnn", (16, 32, 64)),
    "cnn_m": ("cnn", (32, 64, 128, 256)),
}
FORMATS = ("onnx", "torchscript")
CNN_CLASSES = 10
IMAGE = (3, 64, 64)
BURST_ON_S, BURST_OFF_S = 0.5, 1.5


# ---------------------------------------------------------------- models


def _weights(kind: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) per layer: Gemm weights [in, out]; conv weights [out, in, 3, 3]."""
    family, sizes = KINDS[kind]
    rng = np.random.default_rng(seed)
    out = []
    if family == "mlp":
        for a, b in zip(sizes, sizes[1:], strict=False):
            out.append(((rng.standard_normal((a, b)) / math.sqrt(a)).astype(np.float32),
                        (rng.standard_normal(b) * 0.01).astype(np.float32)))
        return out
    channels = (IMAGE[0], *sizes)
    for a, b in zip(channels, channels[1:], strict=False):
        out.append(((rng.standard_normal((b, a, 3, 3)) / math.sqrt(9 * a)).astype(np.float32),
                    (rng.standard_normal(b) * 0.01).astype(np.float32)))
    side = IMAGE[1] // 2 ** len(sizes)
    flat = sizes[-1] * side * side
    out.append(((rng.standard_normal((flat, CNN_CLASSES)) / math.sqrt(flat)).astype(np.float32),
                np.zeros(CNN_CLASSES, np.float32)))
    return out


def input_shape(kind: str) -> tuple[int, ...]:
    family, sizes = KINDS[kind]
    return (sizes[0],) if family == "mlp" else IMAGE


def _onnx(kind: str, weights: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    family, _ = KINDS[kind]
    nodes, inits, prev = [], [], "INPUT0"
    last = len(weights) - 1
    for i, (w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        if family == "cnn" and i < last:
            nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                      helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
                      helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2])]
            prev = f"p{i}"
            continue
        if family == "cnn":
            nodes.append(helper.make_node("Flatten", [prev], ["flat"], axis=1))
            prev = "flat"
        out = "OUTPUT0" if i == last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out if i == last else f"g{i}"]))
        if i != last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        prev = out
    in_shape = ["batch", *input_shape(kind)]
    out_dim = weights[-1][0].shape[1]
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", out_dim])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", test_models.ONNX_OPSET)])
    model.ir_version = test_models.ONNX_IR_VERSION
    return model.SerializeToString()


def _torchscript(kind: str, weights: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    import torch

    family, _ = KINDS[kind]

    class Mlp(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList()
            for w, b in weights:
                lin = torch.nn.Linear(w.shape[0], w.shape[1])
                lin.weight.data = torch.from_numpy(w.T.copy())
                lin.bias.data = torch.from_numpy(b.copy())
                self.layers.append(lin)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = len(self.layers)
            for i, layer in enumerate(self.layers):
                x = layer(x)
                if i < n - 1:
                    x = torch.relu(x)
            return x

    class Cnn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = torch.nn.ModuleList()
            for w, b in weights[:-1]:
                conv = torch.nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)
                conv.weight.data = torch.from_numpy(w.copy())
                conv.bias.data = torch.from_numpy(b.copy())
                self.convs.append(conv)
            w, b = weights[-1]
            self.fc = torch.nn.Linear(w.shape[0], w.shape[1])
            self.fc.weight.data = torch.from_numpy(w.T.copy())
            self.fc.bias.data = torch.from_numpy(b.copy())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for conv in self.convs:
                x = torch.max_pool2d(torch.relu(conv(x)), 2)
            return self.fc(torch.flatten(x, 1))

    module = (Mlp() if family == "mlp" else Cnn()).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


def _exec_ms(run_once, repeats: int = 60) -> tuple[float, float]:
    for _ in range(5):
        run_once()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def slo_ms(exec_p99_ms: float, factor: float = 4.0, overhead_ms: float = 2.0, floor_ms: float = 25.0) -> float:
    """``factor`` x (execute p99 + overhead), rounded up to 5 ms, at least ``floor_ms``: a
    request that waits behind a cold load (50-300 ms) misses it unless the load is quick."""
    return max(floor_ms, 5.0 * math.ceil(factor * (exec_p99_ms + overhead_ms) / 5.0))


@dataclass(frozen=True)
class _Timing:
    p50_ms: float
    p99_ms: float


def _measure(kind: str, fmt: str, data: bytes, x: np.ndarray, cpus: str | None) -> tuple[_Timing, np.ndarray]:
    """Execute time at batch 1 with one thread, pinned to ``cpus`` for the measurement."""
    before = os.sched_getaffinity(0)
    if cpus:
        from worker.affinity import parse_cpus
        os.sched_setaffinity(0, parse_cpus(cpus))
    try:
        if fmt == "onnx":
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
            out = sess.run(None, {"INPUT0": x})[0]
            p50, p99 = _exec_ms(lambda: sess.run(None, {"INPUT0": x}))
        else:
            import torch
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                mod = torch.jit.load(io.BytesIO(data))
                tx = torch.from_numpy(x)
                with torch.inference_mode():
                    out = mod(tx).numpy()
                    p50, p99 = _exec_ms(lambda: mod(tx))
            finally:
                torch.set_num_threads(threads)
    finally:
        os.sched_setaffinity(0, before)
    return _Timing(p50, p99), out


def build_models(root: Path, copies: int = 3, kinds: Sequence[str] = tuple(KINDS), formats: Sequence[str] = FORMATS,
                 cpus: str | None = "1", slo_factor: float = 4.0) -> list[PeerModel]:
    """``copies`` x kinds x formats models written under ``root/<name>/model.{onnx,pt}``.
    Execute times are measured once per (kind, format) on the first copy; the SLO follows."""
    root.mkdir(parents=True, exist_ok=True)
    import onnxruntime as ort

    timings: dict[tuple[str, str], _Timing] = {}
    out: list[PeerModel] = []
    rng = np.random.default_rng(7)
    index = 0
    for copy in range(copies):
        for kind in kinds:
            weights = _weights(kind, seed=1000 * copy + list(KINDS).index(kind))
            onnx_bytes = _onnx(kind, weights)
            x = rng.standard_normal((1, *input_shape(kind))).astype(np.float32)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            ref = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"]).run(None, {"INPUT0": x})[0]
            for fmt in formats:
                data = onnx_bytes if fmt == "onnx" else _torchscript(kind, weights)
                if (kind, fmt) not in timings:
                    timings[kind, fmt], got = _measure(kind, fmt, data, x, cpus)
                    if not np.allclose(got, ref, rtol=1e-3, atol=1e-4):
                        raise AssertionError(f"{kind}: the {fmt} twin computes something else than the ONNX model")
                name = f"m{index:02d}_{kind}_{'onnx' if fmt == 'onnx' else 'pt'}"
                index += 1
                d = root / name
                d.mkdir(parents=True, exist_ok=True)
                path = d / ("model.onnx" if fmt == "onnx" else "model.pt")
                path.write_bytes(data)
                t = timings[kind, fmt]
                out.append(PeerModel(
                    name=name, kind=kind, format=fmt, path=path,
                    input_name="INPUT0" if fmt == "onnx" else "INPUT__0",
                    output_name="OUTPUT0" if fmt == "onnx" else "OUTPUT__0",
                    input_shape=input_shape(kind), weight_bytes=sum(w.nbytes + b.nbytes for w, b in weights),
                    exec_ms=t.p50_ms, slo_ms=slo_ms(t.p99_ms, slo_factor), sample_input=x, sample_output=ref))
    return out


# ---------------------------------------------------------------- trace


def zipf(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


@dataclass(frozen=True)
class Level:
    """One offered-load step: ``rate_rps`` over ``duration_s``; each model's arrivals, as
    offsets from the level's start."""

    rate_rps: float
    duration_s: float
    schedules: dict[str, list[float]]

    @property
    def requests(self) -> int:
        return sum(len(s) for s in self.schedules.values())


def level(models: Sequence[PeerModel], rate_rps: float, duration_s: float, seed: int, s: float = 1.0,
          popularity_seed: int | None = None, shifted_first: bool = False) -> Level:
    """Zipf(``s``) popularity over a seeded permutation, a new one half-way; Poisson arrivals,
    on/off bursts (the same mean rate) for every third model of the permutation. The two
    permutations come from ``popularity_seed`` (default ``seed``), the arrivals from ``seed``:
    levels that share a popularity seed rank the models alike, so a system that hosts a
    fixed set is not luckier at one offered load than at the next. ``shifted_first``: the
    second permutation comes first, so a level can begin with the popularity the previous
    one ended with (one shift per level, half-way, and none between levels)."""
    n = len(models)
    rng = np.random.default_rng(seed)
    ranking = np.random.default_rng(seed if popularity_seed is None else popularity_seed)
    pop = zipf(n, s)
    halves = [ranking.permutation(n), ranking.permutation(n)]
    if shifted_first:
        halves.reverse()
    half = duration_s / 2
    schedules: dict[str, list[float]] = {m.name: [] for m in models}
    for h, perm in enumerate(halves):
        for rank, idx in enumerate(perm):
            m = models[idx]
            rate = rate_rps * pop[rank]
            sub = int(rng.integers(2**31))
            if idx % 3 == 0:
                on_rate = rate * (BURST_ON_S + BURST_OFF_S) / BURST_ON_S
                times = loadgen.on_off(on_rate, 0.0, BURST_ON_S, BURST_OFF_S, half, seed=sub)
            else:
                times = loadgen.poisson(rate, half, seed=sub)
            schedules[m.name].extend(h * half + t for t in times)
    return Level(rate_rps, duration_s, schedules)


def capacity_rps(models: Sequence[PeerModel], s: float = 1.0) -> float:
    """The rate one core would answer if it did nothing but execute (popularity-weighted
    mean execute time at batch 1, averaged over the permutation): the unit offered load is
    given in. Every system spends more than this per request, so its knee sits below 1.0."""
    mean_exec_s = float(np.mean([m.exec_ms for m in models])) / 1e3
    return 1.0 / mean_exec_s


def trace_digest(levels: Sequence[Level]) -> str:
    h = hashlib.sha256()
    for lv in levels:
        h.update(f"{lv.rate_rps:.6f}/{lv.duration_s:.6f}".encode())
        for name in sorted(lv.schedules):
            h.update(name.encode())
            h.update(np.asarray(lv.schedules[name], np.float64).tobytes())
    return h.hexdigest()[:16]
