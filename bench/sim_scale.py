"""The simulator at scale (issue 14, Measure): 1,000 and 10,000 models on 10 and 100
simulated GPUs, one simulated hour each, inferplex / LRU / static side by side.

    .venv/bin/python -m bench.sim_scale [--quick] [--configs 1000x10,10000x100] [--duration 1h]

Each configuration runs ``sim.runner.run`` (the production Scheduler, Planner and
LatencyPredictor on a virtual clock) over the same seeded Azure-Functions-shaped workload
(``sim.workload.azure_like``) for every policy: models drawn from the V100 profile table
(``sim.profiles.GPU_PROFILES``, cited there), SLO 10x the batch-1 execute time and at least
100 ms, ``--rate-per-gpu`` requests per second per GPU on average, instances of
``--instance-memory`` each (artifact cache 4x that). The cores' own cost is measured in
wall-clock time: scheduler decisions (admit, schedule and complete calls) per second, planner
calls, and simulated seconds per wall second.

Writes bench/results/sim_scale.{md,png} (``--quick``: sim_scale_quick.{md,png}: 100 models on 2
GPUs and 1,000 on 10 of 4 GiB each, one simulated minute, in seconds).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench._common import pyplot
from placement.cluster import DEFAULT_EVICT_MARGIN
from sim import report
from sim.cli import POLICY_NAMES, ProgressBar, evict_margin, parse_duration, parse_size
from sim.metrics import SimResult
from sim.profiles import GPU_PROFILES
from sim.runner import run
from sim.workload import azure_like

RESULTS = Path(__file__).resolve().parent / "results"
FULL = ((1000, 10, None), (10000, 100, None))
QUICK = ((100, 2, None), (1000, 10, None))


def configs(text: str) -> list[tuple[int, int, float | None]]:
    """``MODELSxGPUS[@DURATION]``, comma-separated: 1000x10,10000x100@10m."""
    out = []
    for part in text.split(","):
        size, _, when = part.strip().partition("@")
        models, _, gpus = size.partition("x")
        if not (models.isdigit() and gpus.isdigit()) or int(models) < 1 or int(gpus) < 1:
            raise argparse.ArgumentTypeError(f"{part!r}: write MODELSxGPUS[@DURATION], e.g. 1000x10,10000x100@10m")
        out.append((int(models), int(gpus), parse_duration(when) if when else None))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small configurations, one simulated minute")
    p.add_argument("--configs", type=configs, default=None,
                   help="MODELSxGPUS[@DURATION],... (default 1000x10,10000x100 for --duration)")
    p.add_argument("--duration", type=parse_duration, default=None, help="simulated time (default 1h; quick 1m)")
    p.add_argument("--rate-per-gpu", type=float, default=20.0, help="mean requests/s per GPU (default 20)")
    p.add_argument("--instance-memory", type=parse_size, default=None,
                   help="per GPU (default 32GiB; quick 4GiB, so that memory is scarce within a minute)")
    p.add_argument("--policies", default=",".join(POLICY_NAMES))
    p.add_argument("--evict-margin", type=evict_margin, default=DEFAULT_EVICT_MARGIN,
                   help=f"policy inferplex's PlannerConfig.evict_margin (a number >= 1, or none; default {DEFAULT_EVICT_MARGIN:g})")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    grid = args.configs or (QUICK if args.quick else FULL)
    duration = args.duration or (60.0 if args.quick else 3600.0)
    if args.instance_memory is None:
        args.instance_memory = parse_size("4GiB" if args.quick else "32GiB")
    policies = [x for x in args.policies.split(",") if x]
    out = args.out or RESULTS / f"sim_scale{'_quick' if args.quick else ''}.md"
    profiles = [pr for name, pr in GPU_PROFILES.items() if name.endswith("-v100")]
    started = time.perf_counter()
    runs: dict[tuple[int, int], list[SimResult]] = {}
    for models, gpus, own in grid:
        rate = args.rate_per_gpu * gpus
        for policy in policies:
            w = azure_like(models, own or duration, rate, args.seed, profiles=profiles)
            r = run(w, instances=gpus, instance_memory=args.instance_memory, policy=policy, seed=args.seed,
                    evict_margin=args.evict_margin,
                    progress=ProgressBar(f"{models}x{gpus} {policy}", width=20))
            runs.setdefault((models, gpus), []).append(r)
            print(f"{models} models x {gpus} GPUs, {policy}: SLO admitted {_pct(r.slo_admitted)}, all "
                  f"{_pct(r.slo_all)}, goodput {r.goodput:.1f} req/s, {r.decisions_per_s:,.0f} decisions/s, "
                  f"{r.sim_speed:.2f} sim s/wall s, {r.wall_s:.0f} s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    _plot(runs, out.with_suffix(".png"))
    out.write_text(_markdown(runs, args, argv, time.perf_counter() - started, out))
    print(out.read_text())
    return 0


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _summary(runs: dict[tuple[int, int], list[SimResult]]) -> str:
    head = ("| models × GPUs | policy | requests | SLO attainment, admitted | SLO attainment, all | goodput req/s "
            "| refused (by reason) | dropped | cold starts /min | memory in use | decisions/s (wall) "
            "| sim s / wall s | wall s |\n|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for (models, gpus), rs in runs.items():
        for r in rs:
            refused = ", ".join(f"{k} {v:,}" for k, v in r.refused.items()) or "0"
            rows.append(f"| {models:,} × {gpus} | {r.policy} | {r.arrivals:,} | {_pct(r.slo_admitted)} | "
                        f"{_pct(r.slo_all)} | {r.goodput:,.1f} | {refused} | {r.dropped:,} | "
                        f"{r.cold_starts_per_min:,.1f} | {_pct(r.mem_util)} | {r.decisions_per_s:,.0f} | "
                        f"{r.sim_speed:,.2f} | {r.wall_s:,.0f} |")
    return "\n".join([head, *rows])


def _targets(runs: dict[tuple[int, int], list[SimResult]]) -> str:
    key = max(runs, key=lambda k: (k[0], k[1]))
    by = {r.policy: r for r in runs[key]}
    lines = []
    ip = by.get("inferplex")
    if ip is not None:
        ok = ip.slo_admitted is not None and ip.slo_admitted >= 0.999
        lines.append(f"- ≥ 99.9% of admitted requests within SLO at {key[0]:,} models × {key[1]} GPUs: "
                     f"{_pct(ip.slo_admitted)} — {'met' if ok else 'missed'}")
        lru = by.get("lru")
        if lru is not None:
            ratio = ip.goodput / lru.goodput if lru.goodput > 0 else float("inf")
            lines.append(f"- goodput ≥ 1.5× LRU's: {ip.goodput:,.1f} vs {lru.goodput:,.1f} req/s = {ratio:.2f}× — "
                         f"{'met' if ratio >= 1.5 else 'missed'}")
    worst = min(r.decisions_per_s for rs in runs.values() for r in rs)
    lines.append(f"- the scheduler core sustains ≥ 100,000 decisions per wall second: the slowest run "
                 f"{worst:,.0f}/s — {'met' if worst >= 100_000 else 'missed'}")
    return "\n".join(lines)


def _markdown(runs: dict[tuple[int, int], list[SimResult]], args: argparse.Namespace, argv: list[str] | None,
              total_s: float, out: Path) -> str:
    import os
    import platform

    cmd = "python -m bench.sim_scale " + " ".join(argv if argv is not None else sys.argv[1:])
    load = os.getloadavg()[0]
    details = "\n\n".join(f"### {m:,} models × {g} GPUs, {rs[0].duration_s / 60:g} simulated minutes\n\n"
                          f"{rs[0].workload}\n\n{report.table(rs)}" for (m, g), rs in runs.items())
    w = next(iter(runs.values()))[0].workload
    return f"""# The simulator at scale (issue 14)

Command: `{cmd.strip()}` — {platform.machine()}, {os.cpu_count()} cores shared with other work (load average
{load:.2f} at the end), Python {platform.python_version()}; {total_s:.0f} s in all.

Each run: `sim.runner.run` — the production `admission.scheduler.Scheduler`, `placement.planner.Planner`
(policy inferplex = `cost`, lru, static) and `profiler.predictor.LatencyPredictor`, on simulated GPUs of
{args.instance_memory / 2**30:g} GiB (artifact cache 4x that; one pipe per GPU for loads and executions;
execute and load times from the V100 profiles of `sim/profiles.py` with 5% lognormal noise) for
{", ".join(f"{rs[0].duration_s / 60:g} simulated minutes at {m:,} × {g}" for (m, g), rs in runs.items())}.
Workload (the same seed for every policy): {w}; {args.rate_per_gpu:g} requests/s per GPU on average.

{_summary(runs)}

Targets (issue 14):
{_targets(runs)}

SLO attainment of admitted requests counts drops and late answers as misses; of all requests, refusals too
(quota, infeasible: admission; cold_infeasible: the model's load plus a batch of one ends after the deadline;
no_capacity: the planner found no room). A cold start is a load a request waited for. Decisions/s: the
scheduler core's admit and schedule calls per second of the wall time spent in them (the predictor's
answers included; complete, bookkeeping, is timed apart in the tables below). Wall time also holds the planner (its calls' time is in the per-configuration tables) and
the simulator itself.

{details}

![sim scale]({out.with_suffix('.png').name})
"""


def _plot(runs: dict[tuple[int, int], list[SimResult]], path: Path) -> None:
    plt = pyplot()
    n = len(runs)
    fig, axes = plt.subplots(n, 3, figsize=(14, 3.2 * n), squeeze=False)
    for row, ((models, gpus), rs) in enumerate(runs.items()):
        a_slo, a_good, a_mem = axes[row]
        for r in rs:
            x = [i + 0.5 for i in range(len(r.series["ok"]))]
            a_slo.plot(x, [100 * v for v in r.series["slo_all"]], label=r.policy)
            a_good.plot(x, r.series["goodput"], label=r.policy)
            a_mem.plot(x, [100 * v for v in r.series["mem_util"]], label=r.policy)
        a_slo.set_title(f"{models:,} models × {gpus} GPUs: within SLO, all requests (%)", fontsize=9)
        a_good.set_title("goodput (req/s within SLO)", fontsize=9)
        a_mem.set_title("memory held by models (%)", fontsize=9)
        a_mem.set_ylim(0, 105)
        for ax in axes[row]:
            ax.set_xlabel("simulated minute", fontsize=8)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
