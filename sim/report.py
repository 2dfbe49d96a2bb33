"""A simulation's results folder: ``results.md`` (one column per policy) and PNG plots
(SLO attainment and goodput over time, memory in use, cold starts, refusals by reason),
policies side by side on every plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from sim.metrics import REFUSAL_REASONS, SimResult

PLOTS = ("slo_goodput.png", "memory.png", "cold_starts.png", "refusals.png")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def _gib(n: int) -> str:
    return f"{n / 2**30:g} GiB"


def table(results: Sequence[SimResult]) -> str:
    """The markdown table: one row per measure, one column per policy."""
    rows: list[tuple[str, list[str]]] = [
        ("requests", [f"{r.arrivals:,}" for r in results]),
        ("admitted", [f"{r.admitted:,}" for r in results]),
        ("SLO attainment, admitted", [_pct(r.slo_admitted) for r in results]),
        ("SLO attainment, all (refusals miss)", [_pct(r.slo_all) for r in results]),
        ("goodput (within SLO, req/s)", [f"{r.goodput:,.1f}" for r in results]),
        ("latency p50 / p99 (ms, served)", [f"{_ms(r.p50_ms)} / {_ms(r.p99_ms)}" for r in results]),
        ("served late", [f"{r.late:,}" for r in results]),
        ("dropped before running", [f"{r.dropped:,}" for r in results]),
    ]
    for reason in REFUSAL_REASONS:
        if any(r.refused.get(reason) for r in results):
            rows.append((f"refused: {reason}", [f"{r.refused.get(reason, 0):,}" for r in results]))
    rows += [
        ("cold starts (per min)", [f"{r.cold_starts:,} ({r.cold_starts_per_min:,.1f})" for r in results]),
        ("loads (warm from cache)", [f"{r.loads:,} ({r.warm_loads:,})" for r in results]),
        ("evictions", [", ".join(f"{k} {v:,}" for k, v in r.evictions.items()) or "0" for r in results]),
        ("bytes loaded", [f"{r.bytes_loaded / 1e9:,.1f} GB" for r in results]),
        ("memory in use (mean)", [_pct(r.mem_util) for r in results]),
        ("scheduler decisions (admit + schedule)", [f"{r.decisions:,}" for r in results]),
        ("scheduler decisions per wall second", [f"{r.decisions_per_s:,.0f}" for r in results]),
        ("wall s in admit + schedule / complete", [f"{r.decision_wall_s:.2f} / {r.complete_wall_s:.2f}"
                                                   for r in results]),
        ("planner calls (wall s)", [f"{r.placements:,} ({r.placement_wall_s:.1f} s)" for r in results]),
        ("simulated s per wall s", [f"{r.sim_speed:,.2f}" for r in results]),
        ("wall time", [f"{r.wall_s:,.1f} s" for r in results]),
    ]
    head = "| | " + " | ".join(r.policy for r in results) + " |"
    sep = "|---|" + "---:|" * len(results)
    return "\n".join([head, sep, *(f"| {name} | " + " | ".join(vals) + " |" for name, vals in rows)])


def markdown(results: Sequence[SimResult], title: str = "inferplex sim") -> str:
    r0 = results[0]
    lines = [
        f"# {title}", "",
        f"{r0.models:,} models on {r0.instances} instances of {_gib(r0.instance_memory)}, "
        f"{r0.duration_s / 60:g} simulated minutes, seed {r0.seed}.", "",
        f"Workload: {r0.workload}", "",
        table(results), "",
        "SLO attainment of admitted requests counts drops and late answers as misses; of all "
        "requests, refusals too. Goodput: responses within their SLO per second. A cold start is "
        "a load a request waited for. Plots: " + ", ".join(f"[{p}]({p})" for p in PLOTS) + ".", "",
    ]
    return "\n".join(lines)


def plot(results: Sequence[SimResult], out: Path) -> list[Path]:
    from bench._common import pyplot

    plt = pyplot()
    written = []
    bucket_min = 1.0

    def minutes(r: SimResult) -> list[float]:
        return [(i + 0.5) * bucket_min for i in range(len(r.series["ok"]))]

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for r in results:
        x = minutes(r)
        a1.plot(x, [100 * v for v in r.series["slo_admitted"]], label=f"{r.policy}: admitted")
        a1.plot(x, [100 * v for v in r.series["slo_all"]], linestyle="--", label=f"{r.policy}: all")
        a2.plot(x, r.series["goodput"], label=r.policy)
    a1.set_ylabel("within SLO (%)")
    a1.set_title("SLO attainment per minute (dashed: refusals count as misses)")
    a1.legend(fontsize=8, ncol=2)
    a2.set_ylabel("goodput (req/s within SLO)")
    a2.set_xlabel("simulated minute")
    a2.legend(fontsize=8)
    written.append(_save(fig, out / "slo_goodput.png"))

    fig, ax = plt.subplots(figsize=(9, 3.5))
    for r in results:
        ax.plot(minutes(r), [100 * v for v in r.series["mem_util"]], label=r.policy)
    ax.set_ylabel("memory held by models (%)")
    ax.set_xlabel("simulated minute")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    written.append(_save(fig, out / "memory.png"))

    fig, ax = plt.subplots(figsize=(9, 3.5))
    for r in results:
        ax.plot(minutes(r), r.series["cold_starts"], label=f"{r.policy}: cold starts")
        ax.plot(minutes(r), r.series["evictions"], linestyle=":", label=f"{r.policy}: evictions")
    ax.set_ylabel("per minute")
    ax.set_xlabel("simulated minute")
    ax.legend(fontsize=8, ncol=2)
    written.append(_save(fig, out / "cold_starts.png"))

    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.5), sharey=True, squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        x = minutes(r)
        bottom = [0.0] * len(x)
        for reason in (*REFUSAL_REASONS, "dropped"):
            ys = r.series["dropped"] if reason == "dropped" else r.series.get(f"refused_{reason}", [0.0] * len(x))
            if any(ys):
                ax.bar(x, ys, bottom=bottom, width=bucket_min * 0.9, label=reason)
                bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
        ax.set_title(r.policy)
        ax.set_xlabel("simulated minute")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("requests refused or dropped")
    written.append(_save(fig, out / "refusals.png"))
    return written


def _save(fig: object, path: Path) -> Path:
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path, dpi=110)  # type: ignore[attr-defined]
    import matplotlib.pyplot as plt

    plt.close(fig)  # type: ignore[arg-type]
    return path


def write(results: Sequence[SimResult], out: Path, title: str = "inferplex sim") -> list[Path]:
    """Write results.md, results.json (every number and series) and the plots into ``out``."""
    if not results:
        raise ValueError("no results to report")
    out.mkdir(parents=True, exist_ok=True)
    md = out / "results.md"
    md.write_text(markdown(results, title))
    js = out / "results.json"
    js.write_text(json.dumps([{**r.outcome(), "decision_wall_s": r.decision_wall_s,
                               "complete_wall_s": r.complete_wall_s,
                               "placement_wall_s": r.placement_wall_s, "wall_s": r.wall_s}
                              for r in results], indent=1, default=float))
    return [md, js, *plot(results, out)]
