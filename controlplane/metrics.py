"""Prometheus text exposition for the control plane, without a client library.

Counters and histograms are plain dicts keyed by label tuples; the gateway's hot
path only does a dict lookup and a bisect, and ``render`` builds the text on scrape.
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field

# seconds: the gateway's added cost is sub-millisecond, model execution is ms to seconds
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
LOAD_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        # Prometheus buckets are "le": a value equal to a bound belongs to that bucket
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1


@dataclass(frozen=True, slots=True)
class _Family:
    name: str
    kind: str  # counter | histogram
    help: str


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    items = list(labels) + ([extra] if extra else [])
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _fmt_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Metrics:
    """The control plane's counters and histograms (one per process)."""

    _FAMILIES = (
        _Family("inferplex_requests_total", "counter", "Inference requests answered by the gateway."),
        _Family("inferplex_request_duration_seconds", "histogram",
                "Gateway inference latency, from request received to response sent."),
        _Family("inferplex_errors_total", "counter", "Errors by tenant, model and kind."),
        _Family("inferplex_model_loads_total", "counter", "Model loads on instances, by tenant, model and outcome."),
        _Family("inferplex_model_load_duration_seconds", "histogram", "Wall time of model loads."),
        _Family("inferplex_model_bytes_loaded_total", "counter", "Bytes of the models loaded, by tenant and model."),
        _Family("inferplex_cold_starts_total", "counter", "Requests that waited for their model to load."),
        _Family("inferplex_evictions_total", "counter", "Models unloaded, by tenant, model and reason: room "
                "(for another model), shrink (a copy no longer needed), delete."),
    )

    def __init__(self) -> None:
        # the gRPC and HTTP servers share one event loop, but bench/tests may call from threads
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, dict[Labels, _Histogram]] = {}
        # the gateway's per-request series, bound once per (tenant, model, protocol, status):
        # the hot path then skips building label tuples and looking up families
        self._request_series: dict[tuple[str, str, str, str], tuple[Labels, _Histogram]] = {}

    def _inc(self, name: str, labels: Labels, by: float = 1.0) -> None:
        with self._lock:
            fam = self._counters.setdefault(name, {})
            fam[labels] = fam.get(labels, 0.0) + by

    def _observe(self, name: str, labels: Labels, value: float, bounds: tuple[float, ...]) -> None:
        with self._lock:
            fam = self._histograms.setdefault(name, {})
            hist = fam.get(labels)
            if hist is None:
                hist = fam[labels] = _Histogram(bounds)
            hist.observe(value)

    # ---- recording -------------------------------------------------------------------

    def request(self, tenant: str, model: str, protocol: str, status: str, seconds: float) -> None:
        key = (tenant, model, protocol, status)
        with self._lock:
            series = self._request_series.get(key)
            if series is None:
                series = self._bind_request(key)
            labels, hist = series
            counters = self._counters["inferplex_requests_total"]
            counters[labels] = counters.get(labels, 0.0) + 1.0
            hist.observe(seconds)

    def _bind_request(self, key: tuple[str, str, str, str]) -> tuple[Labels, _Histogram]:
        tenant, model, protocol, status = key
        labels = (("tenant", tenant), ("model", model), ("protocol", protocol), ("status", status))
        self._counters.setdefault("inferplex_requests_total", {})
        fam = self._histograms.setdefault("inferplex_request_duration_seconds", {})
        hist_labels = labels[:3]
        hist = fam.get(hist_labels)
        if hist is None:
            hist = fam[hist_labels] = _Histogram(LATENCY_BUCKETS)
        series = self._request_series[key] = (labels, hist)
        return series

    def error(self, tenant: str, model: str, kind: str) -> None:
        self._inc("inferplex_errors_total", (("tenant", tenant), ("model", model), ("kind", kind)))

    def load(self, model: str, seconds: float, ok: bool) -> None:
        """``model``: the instance-level (tenant-qualified) name."""
        labels = _tenant_model(model)
        self._inc("inferplex_model_loads_total", (*labels, ("outcome", "ok" if ok else "failed")))
        if ok:
            self._observe("inferplex_model_load_duration_seconds", labels, seconds, LOAD_BUCKETS)

    def loaded_bytes(self, tenant: str, model: str, n: int) -> None:
        self._inc("inferplex_model_bytes_loaded_total", (("tenant", tenant), ("model", model)), float(n))

    def cold_start(self, tenant: str, model: str) -> None:
        self._inc("inferplex_cold_starts_total", (("tenant", tenant), ("model", model)))

    def eviction(self, model: str, reason: str = "delete") -> None:
        """``model``: the instance-level name (its tenant is read from it)."""
        self._inc("inferplex_evictions_total", (*_tenant_model(model), ("reason", reason)))

    # ---- reading ---------------------------------------------------------------------

    def counter_value(self, name: str, **labels: str) -> float:
        """Sum of a counter over every series whose labels include ``labels``."""
        want = set(labels.items())
        with self._lock:
            return sum(v for k, v in self._counters.get(name, {}).items() if want <= set(k))

    def counter_series(self, name: str) -> dict[Labels, float]:
        """A copy of every series of one counter (the console's history samples them)."""
        with self._lock:
            return dict(self._counters.get(name, {}))

    def histogram_series(self, name: str) -> dict[Labels, tuple[tuple[float, ...], tuple[int, ...]]]:
        """A copy of one histogram family: labels -> (bucket bounds, per-bucket counts, the
        last one above every bound; not cumulative)."""
        with self._lock:
            return {k: (h.bounds, tuple(h.counts)) for k, h in self._histograms.get(name, {}).items()}

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for fam in self._FAMILIES:
                lines.append(f"# HELP {fam.name} {fam.help}")
                lines.append(f"# TYPE {fam.name} {fam.kind}")
                if fam.kind == "counter":
                    for labels, value in sorted(self._counters.get(fam.name, {}).items()):
                        lines.append(f"{fam.name}{_fmt_labels(labels)} {_fmt_value(value)}")
                    continue
                for labels, hist in sorted(self._histograms.get(fam.name, {}).items()):
                    cumulative = 0
                    for bound, count in zip((*hist.bounds, math.inf), hist.counts, strict=True):
                        cumulative += count
                        le = ("le", _fmt_value(bound))
                        lines.append(f"{fam.name}_bucket{_fmt_labels(labels, le)} {cumulative}")
                    lines.append(f"{fam.name}_sum{_fmt_labels(labels)} {_fmt_value(hist.total)}")
                    lines.append(f"{fam.name}_count{_fmt_labels(labels)} {hist.n}")
        return "\n".join(lines) + "\n"


def render_counter(name: str, help_text: str, series: dict[tuple[tuple[str, str], ...], float]) -> str:
    """One counter family in Prometheus text, for counts kept elsewhere (the scheduler's)."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    lines += [f"{name}{_fmt_labels(labels)} {_fmt_value(value)}" for labels, value in sorted(series.items())]
    return "\n".join(lines) + "\n"


def _tenant_model(qualified: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """(tenant, model) labels of an instance-level name (``tenant__model``; others as they are)."""
    tenant, sep, model = qualified.partition("__")
    return (("tenant", tenant), ("model", model)) if sep else (("tenant", ""), ("model", qualified))
