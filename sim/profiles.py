"""What a simulated instance needs to know about a model: memory, load and execute times.

A ``Profile`` is one model on one kind of instance: resident bytes, the load time
from the artifact store (cold) and from the instance's local cache (warm), and the
execute time per batch size. Three sources:

- ``GPU_PROFILES``: a few well-known models on a data-centre GPU, each number cited
  below (NVIDIA's published Triton results for ResNet-50 and BERT on a V100 and an
  A100). Load times are not in those tables: they are estimates from the resident
  size over the PCIe link and the network, said so in each profile's ``source``.
- ``measured_profiles()``: the models inferplex's own benchmarks measured on this
  machine's CPU (``bench/results/sim_crosscheck.md``, ``placement_eviction.md``).
- ``from_inferplex_profile``: a stored model version's profile, as
  ``GET /v2/models/{m}/profile`` answers it (or as the catalog stores it), so an
  operator simulates exactly the models they run.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MiB = 1 << 20
MB = 1_000_000


@dataclass(frozen=True)
class Profile:
    """One model on one instance kind; seconds and bytes."""

    name: str
    bytes: int                                 # resident memory once loaded
    load_cold_s: float                         # artifact store -> loaded
    load_warm_s: float                         # from the instance-local cache
    exec_s: tuple[tuple[int, float], ...]      # (batch size, seconds), ascending by batch
    max_batch: int
    source: str                                # where the numbers come from
    exec_p99_s: tuple[tuple[int, float], ...] = ()  # (batch, p99 seconds) where measured
    _batches: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.bytes < 0:
            raise ValueError(f"profile {self.name!r}: bytes must be >= 0, got {self.bytes}")
        if not (self.load_cold_s >= 0 and self.load_warm_s >= 0):
            raise ValueError(f"profile {self.name!r}: load times must be >= 0 seconds")
        if self.max_batch < 1:
            raise ValueError(f"profile {self.name!r}: max_batch must be >= 1, got {self.max_batch}")
        for label, points in (("exec_s", self.exec_s), ("exec_p99_s", self.exec_p99_s)):
            _check_points(self.name, label, points, required=label == "exec_s")
        object.__setattr__(self, "_batches", tuple(b for b, _ in self.exec_s))

    def exec_at(self, batch: int) -> float:
        """Seconds to execute ``batch`` rows: linear between measured batch sizes, the
        smallest one's time below it, and beyond the largest the last segment's slope
        (one point only: proportional to the batch, no batching gain assumed)."""
        return _interpolate(self.exec_s, self._batches, batch)

    def exec_p99_at(self, batch: int) -> float:
        """The p99 execute time at ``batch`` where measured; the median otherwise."""
        if not self.exec_p99_s:
            return self.exec_at(batch)
        return max(self.exec_at(batch),
                   _interpolate(self.exec_p99_s, tuple(b for b, _ in self.exec_p99_s), batch))


def _check_points(name: str, label: str, points: tuple[tuple[int, float], ...], *, required: bool) -> None:
    if required and not points:
        raise ValueError(f"profile {name!r}: {label} needs at least one (batch, seconds) point")
    prev_b, prev_t = 0, 0.0
    for b, t in points:
        if b <= prev_b:
            raise ValueError(f"profile {name!r}: {label} batch sizes must be >= 1 and ascending, got {points}")
        if not t > 0 or t < prev_t:
            raise ValueError(f"profile {name!r}: {label} seconds must be > 0 and not fall as the batch "
                             f"grows, got {points}")
        prev_b, prev_t = b, t


def _interpolate(points: tuple[tuple[int, float], ...], batches: tuple[int, ...], batch: int) -> float:
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    i = bisect.bisect_left(batches, batch)
    if i < len(points) and points[i][0] == batch:
        return points[i][1]
    if i == 0:
        return points[0][1]
    if i == len(points):
        if len(points) == 1:
            b0, t0 = points[0]
            return t0 * batch / b0
        (b0, t0), (b1, t1) = points[-2], points[-1]
        return t1 + (batch - b1) * max(0.0, (t1 - t0) / (b1 - b0))
    (b0, t0), (b1, t1) = points[i - 1], points[i]
    return t0 + (t1 - t0) * (batch - b0) / (b1 - b0)


def monotone(points: list[tuple[int, float]]) -> tuple[tuple[int, float], ...]:
    """Points sorted by batch with each time at least the previous one (measured times
    can dip a little at a larger batch; a simulator should not reward that noise)."""
    out: list[tuple[int, float]] = []
    for b, t in sorted(points):
        t = max(t, out[-1][1]) if out else t
        out.append((int(b), float(t)))
    return tuple(out)


# --- GPU profiles ---------------------------------------------------------------------
#
# Execute times: NVIDIA DeepLearningExamples, Triton deployment READMEs ("Performance",
# offline scenario, one model instance, FP16), github.com/NVIDIA/DeepLearningExamples:
#  [R50]  PyTorch/Classification/ConvNets/triton/resnet50/README.md, "Offline: NVIDIA DGX-1
#         (1x V100 32GB), ONNX Runtime TensorRT with FP16" and "Offline: NVIDIA DGX A100
#         (1x A100 80GB), ONNX Runtime TensorRT with FP16", column "Avg Latency" (ms, client
#         batch 1..32; includes the local client's send/receive, a fraction of a ms).
#  [BL]   PyTorch/LanguageModeling/BERT/triton/large/README.md, "Offline: NVIDIA DGX-1 (1x
#         V100 32GB), NVIDIA TensorRT with FP16" and "Offline: NVIDIA DGX A100 (1x A100 80GB),
#         NVIDIA TensorRT with FP16", column "Server Compute Infer (ms)", batch 1/8/16, seq 384.
#  [D6]   PyTorch/LanguageModeling/BERT/triton/dist6l/README.md (a 6-layer distilled BERT,
#         seq 384), "Offline: NVIDIA DGX-1 (1x V100 32GB), NVIDIA TensorRT with FP16",
#         column "Server Compute Infer (ms)", batch 1/8/16.
# Resident bytes: FP16 weights from the parameter counts (ResNet-50: 25.6 M, torchvision's
# ResNet50_Weights.IMAGENET1K_V1 card, 25,557,032; BERT-large: 340 M, Devlin et al. NAACL'19
# Sec. 3; the 6-layer student: our estimate, DistilBERT's 66 M, Sanh et al. 2019 Sec. 3, as the
# README gives none) plus 30% for activations and the engine's workspace (our estimate).
# Load times (our estimate, no table gives them): warm = bytes over PCIe (V100 on DGX-1:
# gen3 x16, 15.75 GB/s raw, ~12 GB/s effective; A100: gen4 x16, ~24 GB/s effective) plus
# 5 ms to create the execution context; cold = warm + the bytes over a 10 Gbit/s network
# (1.25 GB/s; Clockwork OSDI'20 Sec. 6 ran on 2x10 Gbps Ethernet) from the artifact store.

_PCIE3_BPS, _PCIE4_BPS, _NET_BPS, _CONTEXT_S = 12e9, 24e9, 1.25e9, 0.005


def _gpu(name: str, params_m: float, exec_ms: list[tuple[int, float]], pcie_bps: float,
         max_batch: int, source: str) -> Profile:
    resident = int(params_m * 1e6 * 2 * 1.3)
    warm = resident / pcie_bps + _CONTEXT_S
    return Profile(name=name, bytes=resident, load_cold_s=round(warm + resident / _NET_BPS, 5),
                   load_warm_s=round(warm, 5), exec_s=monotone([(b, ms / 1e3) for b, ms in exec_ms]),
                   max_batch=max_batch,
                   source=source + "; bytes: FP16 weights + 30% (estimate); loads: PCIe/network "
                          "estimate (sim/profiles.py header)")


GPU_PROFILES: dict[str, Profile] = {p.name: p for p in (
    _gpu("resnet50-v100", 25.6, [(1, 2.838), (2, 3.35), (4, 4.191), (8, 5.979), (16, 9.266), (32, 15.664)],
         _PCIE3_BPS, 32, "NVIDIA DeepLearningExamples ConvNets/triton/resnet50 README, Offline DGX-1 "
         "V100 32GB ORT-TensorRT FP16, Avg Latency"),
    _gpu("resnet50-a100", 25.6, [(1, 2.128), (2, 2.194), (4, 2.759), (8, 3.895), (16, 5.793), (32, 11.193)],
         _PCIE4_BPS, 32, "NVIDIA DeepLearningExamples ConvNets/triton/resnet50 README, Offline DGX A100 "
         "80GB ORT-TensorRT FP16, Avg Latency"),
    _gpu("bert-large-v100", 340.0, [(1, 7.4), (8, 37.7), (16, 70.1)], _PCIE3_BPS, 16,
         "NVIDIA DeepLearningExamples BERT/triton/large README, Offline DGX-1 V100 32GB TensorRT FP16 "
         "seq 384, Server Compute Infer"),
    _gpu("bert-large-a100", 340.0, [(1, 3.4), (8, 15.2), (16, 29.1)], _PCIE4_BPS, 16,
         "NVIDIA DeepLearningExamples BERT/triton/large README, Offline DGX A100 80GB TensorRT FP16 "
         "seq 384, Server Compute Infer"),
    _gpu("distilbert6l-v100", 66.0, [(1, 1.6), (8, 7.0), (16, 13.1)], _PCIE3_BPS, 16,
         "NVIDIA DeepLearningExamples BERT/triton/dist6l README, Offline DGX-1 V100 32GB TensorRT FP16 "
         "seq 384, Server Compute Infer; parameters 66 M (estimate)"),
)}
"""Well-known models on a V100 / A100; every number's source in the profile and above."""

V100_PROFILES = tuple(p for n, p in GPU_PROFILES.items() if n.endswith("-v100"))
"""The V100 set, one kind of GPU for a homogeneous cluster."""


# --- measured here ----------------------------------------------------------------------
#
# Two runs of inferplex's benchmarks on this machine (x86_64, 2 cores shared with other
# work; one worker pinned to one core with one intra-op thread), models built by
# bench/_placement_setup.py (dense stacks, ONNX or TorchScript, 256 / 512 / 1024 wide),
# each read back through GET /v2/models/{m}/profile:
# - with execute times per batch: bench/results/sim_crosscheck.md (`python -m
#   bench.sim_crosscheck`, max_batch_size 4): resident MiB as the control plane accounts it,
#   load cold and warm (p50), execute p50 at batch 1, 2, 4;
# - batch 1 only: bench/results/placement_eviction.md (issue 12, type table): execute p99 at
#   batch 1, so exec_at(b) is proportional to b for those (no batching gain assumed).
_MEASURED_CURVES = (
    # name, MiB, load cold ms, load warm ms, ((batch, execute p50 ms), ...)
    ("onnx256", 17.0, 65, 57, ((1, 5.65), (2, 10.19), (4, 19.72))),
    ("onnx1024", 34.4, 167, 144, ((1, 4.71), (2, 8.45), (4, 16.56))),
    ("pt512", 17.5, 331, 68, ((1, 5.61), (2, 8.57), (4, 14.64))),
    ("pt1024", 15.8, 119, 84, ((1, 7.27), (2, 9.80), (4, 16.23))),
)
_MEASURED_CPU = (
    # name, MiB, exec p99 ms (batch 1), load cold ms, load warm ms
    ("onnx256", 17.0, 8.89, 60, 56),
    ("onnx512", 24.0, 5.66, 88, 79),
    ("onnx1024", 45.8, 5.89, 196, 131),
    ("pt256", 16.7, 6.20, 113, 110),
    ("pt512", 17.7, 8.01, 92, 79),
    ("pt1024", 21.3, 13.95, 153, 121),
)


def measured_profiles() -> dict[str, Profile]:
    """Profiles inferplex measured on this machine's CPU (see the tables' comment): the
    four types with execute times per batch, the other two at batch 1."""
    one = ("measured here: bench/results/placement_eviction.md, type table (worker on one pinned "
           "core, one intra-op thread); execute = p99 at batch 1")
    out = {name: Profile(name=name, bytes=int(mib * MiB), load_cold_s=cold / 1e3, load_warm_s=warm / 1e3,
                         exec_s=((1, p99 / 1e3),), max_batch=16, source=one)
           for name, mib, p99, cold, warm in _MEASURED_CPU}
    curves = ("measured here: bench/results/sim_crosscheck.md, profiles through GET /v2/models/{m}/profile "
              "(worker on one pinned core, one intra-op thread); execute = p50 per batch")
    for name, mib, cold, warm, points in _MEASURED_CURVES:
        out[name] = Profile(name=name, bytes=int(mib * MiB), load_cold_s=cold / 1e3, load_warm_s=warm / 1e3,
                            exec_s=tuple((b, ms / 1e3) for b, ms in points), max_batch=4, source=curves)
    return out


# --- a stored profile -------------------------------------------------------------------

def from_inferplex_profile(name: str, record: Mapping[str, Any], bytes_: int | None = None, *,
                           instance_class: str | None = None, max_batch: int | None = None) -> Profile:
    """A ``Profile`` from inferplex's own: ``record`` is what ``GET /v2/models/{m}/profile``
    answers or what the catalog stores (``{"classes": {class: ClassProfile}}``), or one
    class's ``ClassProfile`` as a dict. Execute times are the p50 per batch (p99 kept in
    ``exec_p99_s``), loads the p50 of cold and warm (the observed ones where those are
    missing). ``bytes_`` overrides the memory the instance reported."""
    from profiler.profile import ClassProfile  # pydantic parses and validates the record

    timing = str(record.get("timing", "compute"))
    classes = record.get("classes") if "classes" in record else None
    if classes is not None:
        if not classes:
            raise ValueError(f"model {name!r} has no measured profile yet (no instance class in it)")
        if instance_class is None:
            instance_class = "cpu" if "cpu" in classes else sorted(classes)[0]
        if instance_class not in classes:
            raise ValueError(f"model {name!r} has no profile for instance class {instance_class!r}; "
                             f"it has {sorted(classes)}")
        record = classes[instance_class]
    cp = ClassProfile.model_validate(record)
    if not cp.exec:
        raise ValueError(f"model {name!r}: its profile has no execute times; profile it first")
    loads = [s for s in (cp.load_time_warm_s, cp.load_time_cold_s, cp.load_time_observed_s) if s is not None]
    if not loads:
        raise ValueError(f"model {name!r}: its profile has no load time; profile it first")
    warm = (cp.load_time_warm_s or cp.load_time_observed_s or cp.load_time_cold_s).p50_s  # type: ignore[union-attr]
    cold = (cp.load_time_cold_s or cp.load_time_observed_s or cp.load_time_warm_s).p50_s  # type: ignore[union-attr]
    size = bytes_ if bytes_ is not None else cp.memory_bytes
    if size is None:
        raise ValueError(f"model {name!r}: the instance reported no memory for it; pass its bytes")
    execs = monotone([(b, s.p50_s or 1e-9) for b, s in cp.exec.items()])
    p99s = monotone([(b, max(s.p99_s, s.p50_s) or 1e-9) for b, s in cp.exec.items()])
    return Profile(name=name, bytes=int(size), load_cold_s=max(cold, warm), load_warm_s=warm, exec_s=execs,
                   max_batch=max_batch or max(cp.exec), exec_p99_s=p99s,
                   source=f"inferplex profile ({instance_class or 'one class'}, {cp.observations} observations, "
                          f"execute times: {timing})")
