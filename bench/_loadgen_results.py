"""What the open-loop driver records per request, and what a benchmark reports from it.

Times in a ``Record`` are seconds from the run's start on the driver's monotonic clock.
The summary follows the scheduler issue's objective: goodput (answers OK within their
SLO, per second of offered load) and SLO attainment of the requests the service admitted.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import pct, pyplot
from kserve.errors import InvalidArgument


class Outcome(enum.Enum):
    """How one scheduled request ended, from the caller's side."""

    OK = "ok"
    QUOTA = "quota"  # refused at admission: HTTP 429 / RESOURCE_EXHAUSTED
    INFEASIBLE = "infeasible"  # refused at admission: HTTP 503 / UNAVAILABLE (cannot meet its SLO)
    DROPPED = "dropped"  # admitted, dropped before it ran: HTTP 504 / DEADLINE_EXCEEDED
    OTHER = "other"  # any other answer from the server
    TRANSPORT = "transport"  # no answer: connection refused or reset, a client-side exception
    TIMEOUT = "timeout"  # the driver gave up waiting (its per-request timeout)
    NOT_SENT = "not sent: driver saturated"  # max in flight reached at its scheduled time

    @property
    def refused(self) -> bool:
        return self in (Outcome.QUOTA, Outcome.INFEASIBLE)


_BY_HTTP = {200: Outcome.OK, 429: Outcome.QUOTA, 503: Outcome.INFEASIBLE, 504: Outcome.DROPPED}
_BY_GRPC = {"OK": Outcome.OK, "RESOURCE_EXHAUSTED": Outcome.QUOTA, "UNAVAILABLE": Outcome.INFEASIBLE,
            "DEADLINE_EXCEEDED": Outcome.DROPPED}


def classify(status: str) -> Outcome:
    """The outcome of a server's answer: ``"200"``/``"429"``... (HTTP) or a gRPC code name
    (``"RESOURCE_EXHAUSTED"``, also as tritonclient spells it, ``"StatusCode.UNAVAILABLE"``).
    By code only: the messages are for people and change wording."""
    code = status.removeprefix("StatusCode.")
    if code.isdigit():
        return _BY_HTTP.get(int(code), Outcome.OTHER)
    return _BY_GRPC.get(code, Outcome.OTHER)


@dataclass(frozen=True, slots=True)
class Record:
    """One scheduled request. ``sent_s``/``done_s`` are None when it was never sent."""

    stream: str
    tenant: str
    model: str
    scheduled_s: float
    sent_s: float | None
    done_s: float | None
    outcome: Outcome
    status: str  # "200", "StatusCode.UNAVAILABLE", an exception's type name, "not sent"
    message: str = ""  # the server's error message (or the exception's), cut to 200 chars

    @property
    def lateness_s(self) -> float | None:
        """How late the driver itself sent it: its own delay, not the server's."""
        return None if self.sent_s is None else self.sent_s - self.scheduled_s

    @property
    def latency_s(self) -> float | None:
        return None if self.sent_s is None or self.done_s is None else self.done_s - self.sent_s


@dataclass(frozen=True, slots=True)
class Summary:
    """One run (or one slice of it), as the benchmarks report it."""

    duration_s: float
    offered: int
    sent: int
    not_sent: int
    ok: int
    ok_within_slo: int
    quota: int
    infeasible: int
    dropped: int
    other: int
    transport: int
    timeout: int
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    lateness_p99_ms: float | None
    lateness_max_ms: float | None

    @property
    def offered_rps(self) -> float:
        return self.offered / self.duration_s

    @property
    def goodput_rps(self) -> float:
        """Requests answered OK within their SLO, per second."""
        return self.ok_within_slo / self.duration_s

    @property
    def admitted(self) -> int:
        """Sent and not refused at admission: every one of these should meet its SLO."""
        return self.sent - self.quota - self.infeasible

    @property
    def slo_attainment(self) -> float | None:
        """Fraction of admitted requests answered OK within their SLO (None if none admitted)."""
        return self.ok_within_slo / self.admitted if self.admitted else None


SloMs = float | Mapping[str, float]


def _slo_s(slo_ms: SloMs, model: str) -> float:
    if isinstance(slo_ms, Mapping):
        if model not in slo_ms:
            raise InvalidArgument(f"no SLO given for model {model!r}: add it to slo_ms ({sorted(slo_ms)})")
        return slo_ms[model] / 1e3
    return slo_ms / 1e3


def summarize(records: Sequence[Record], slo_ms: SloMs, duration_s: float | None = None) -> Summary:
    """Counts, goodput and latency percentiles. ``slo_ms`` is one SLO or one per model name;
    ``duration_s`` is the offered window (default: up to the last scheduled send)."""
    if duration_s is None:
        duration_s = max((r.scheduled_s for r in records), default=0.0)
    duration_s = max(duration_s, 1e-9)
    counts = dict.fromkeys(Outcome, 0)
    for r in records:
        counts[r.outcome] += 1
    ok = [r for r in records if r.outcome is Outcome.OK]
    lat_ms = [r.latency_s * 1e3 for r in ok if r.latency_s is not None]
    within = sum(1 for r in ok if r.latency_s is not None and r.latency_s <= _slo_s(slo_ms, r.model))
    late_ms = [r.lateness_s * 1e3 for r in records if r.lateness_s is not None]

    def q(values: list[float], p: float) -> float | None:
        return pct(values, p) if values else None

    return Summary(duration_s=duration_s, offered=len(records), sent=len(records) - counts[Outcome.NOT_SENT],
                   not_sent=counts[Outcome.NOT_SENT], ok=len(ok), ok_within_slo=within,
                   quota=counts[Outcome.QUOTA], infeasible=counts[Outcome.INFEASIBLE],
                   dropped=counts[Outcome.DROPPED], other=counts[Outcome.OTHER],
                   transport=counts[Outcome.TRANSPORT], timeout=counts[Outcome.TIMEOUT],
                   p50_ms=q(lat_ms, 50), p99_ms=q(lat_ms, 99), p999_ms=q(lat_ms, 99.9),
                   lateness_p99_ms=q(late_ms, 99), lateness_max_ms=max(late_ms, default=None))


def summarize_by(records: Sequence[Record], key: Callable[[Record], str], slo_ms: SloMs,
                 duration_s: float | None = None) -> dict[str, Summary]:
    """One summary per group (e.g. ``key=lambda r: r.tenant``), over the same window."""
    if duration_s is None:
        duration_s = max((r.scheduled_s for r in records), default=0.0)
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    return {k: summarize(v, slo_ms, duration_s) for k, v in sorted(groups.items())}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def markdown_table(rows: Mapping[str, Summary], label: str = "run") -> str:
    """A markdown table, one row per labelled summary."""
    lines = [f"| {label} | offered req/s | goodput req/s | SLO attainment (admitted) | quota 429 | "
             "infeasible 503 | dropped 504 | other errors | no answer | not sent (driver) | "
             "p50 ms | p99 ms | p99.9 ms | driver lateness p99 ms |",
             "|---|" + "---:|" * 13]
    for name, s in rows.items():
        att = "-" if s.slo_attainment is None else f"{s.slo_attainment:.2%}"
        lines.append(f"| {name} | {s.offered_rps:.1f} | {s.goodput_rps:.1f} | {att} | {s.quota} | "
                     f"{s.infeasible} | {s.dropped} | {s.other} | {s.transport + s.timeout} | {s.not_sent} | "
                     f"{_ms(s.p50_ms)} | {_ms(s.p99_ms)} | {_ms(s.p999_ms)} | {_ms(s.lateness_p99_ms)} |")
    return "\n".join(lines) + "\n"


def plot_latency_cdf(series: Mapping[str, Sequence[Record]], path: Path, slo_ms: float | None = None) -> None:
    """CDF of OK latencies, one line per series (log x), the SLO as a vertical line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, records in series.items():
        v = np.sort([r.latency_s * 1e3 for r in records if r.outcome is Outcome.OK and r.latency_s is not None])
        if len(v):
            ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=name)
    if slo_ms is not None:
        ax.axvline(slo_ms, color="red", linestyle="--", label=f"SLO {slo_ms:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel("latency of OK requests (ms, log)")
    ax.set_ylabel("CDF")
    _finish(plt, fig, ax, path)


def plot_goodput_vs_load(series: Mapping[str, Sequence[Summary]], path: Path) -> None:
    """Goodput against offered load, one line per configuration (e.g. scheduler on / off),
    with the ideal y = x for reference."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    top = 0.0
    for name, points in series.items():
        pts = sorted(points, key=lambda s: s.offered_rps)
        xs = [s.offered_rps for s in pts]
        ax.plot(xs, [s.goodput_rps for s in pts], marker="o", label=name)
        top = max([top, *xs])
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="offered")
    ax.set_xlabel("offered load (req/s)")
    ax.set_ylabel("goodput (req/s OK within SLO)")
    _finish(plt, fig, ax, path)


def _finish(plt: Any, fig: Any, ax: Any, path: Path) -> None:
    """Grid, legend, layout; write the PNG and free the figure."""
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
